# flannel-alivpc: the route daemon, the SLB controller and the installer in one image.
# Build stage: turn the package into a wheel (and the pinned dependencies into wheels),
# so the runtime stage needs no compiler and keeps no build tools.
FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.py setup.cfg README.md ./
COPY flannel_alivpc ./flannel_alivpc
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --no-create-home --shell /usr/sbin/nologin flannel
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels flannel-alivpc \
    && rm -rf /wheels
# The DaemonSet runs with hostNetwork and NET_ADMIN; /healthz is served on --healthz-port.
HEALTHCHECK --interval=30s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FLANNELD_HEALTHZ_PORT', '8471') + '/healthz', timeout=2)"]
ENV FLANNELD_HEALTHZ_IP=127.0.0.1 \
    FLANNELD_HEALTHZ_PORT=8471
ENTRYPOINT ["flannel-alivpc"]
