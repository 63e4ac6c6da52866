# flannel-alivpc: the route daemon, the SLB controller and the installer in one image.
#
# Build stage: the package and every dependency become wheels, the dependencies pinned
# by requirements.lock (the versions the test suite ran with). The runtime stage installs
# those wheels offline (--no-index), then removes pip itself: no compiler, no build or
# install tooling is left in the image. tests/manifests/test_dockerfile.py lints this
# file with hadolint and runs the same two pip steps in a fresh virtualenv.
#
# `make image` builds it as registry.cn-hangzhou.aliyuncs.com/flannel-alivpc/flannel-alivpc:<version>,
# the image the manifests name by default; `make image push IMAGE=<registry>/<repo>:<version>` for
# another registry, then render the manifests with that reference (--image or FLANNEL_ALIVPC_IMAGE).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY setup.py setup.cfg README.md requirements.lock ./
COPY flannel_alivpc ./flannel_alivpc
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint requirements.lock .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="flannel-alivpc" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="flannel leases to Alibaba Cloud VPC routes, VXLAN fallback, SLB controller, installer" \
      org.opencontainers.image.licenses="Apache-2.0"
# uid 10001 is the unprivileged user of the SLB controller; the route daemon's DaemonSet
# runs as uid 0 with NET_ADMIN and NET_RAW only (manifests/flannel-alivpc.yaml).
# iptables: --ip-masq programs flannel's masquerade chain through iptables-restore.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin flannel
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "flannel-alivpc==${VERSION}" \
    && rm -rf /wheels \
    && pip uninstall --no-cache-dir --yes pip setuptools wheel
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLANNELD_HEALTHZ_IP=127.0.0.1 \
    FLANNELD_HEALTHZ_PORT=8471
# /healthz of the route daemon (the DaemonSet's liveness probe uses the same port).
HEALTHCHECK --interval=30s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FLANNELD_HEALTHZ_PORT', '8471') + '/healthz', timeout=2)"]
USER 10001
ENTRYPOINT ["flannel-alivpc"]
