"""Everything that talks to systems outside this process.

* ``aliyun_sdk``   the Alibaba Cloud SDK behind one ``AliyunApi.call`` (the only
                   module importing ``aliyunsdk*``): endpoints, HTTPS, retries,
                   error mapping, secret scrubbing.
* ``credentials``  access keys from the environment or a RAM role.
* ``metadata``     the ECS instance metadata service (the only ``requests`` user).
* ``vpc``, ``ecs`` typed wrappers returning ``flannel_alivpc.core.cloud`` values.
* ``cloud``        wires the above together from flags and environment.

(``etcd`` and ``netlink`` are the other external systems' clients.)
"""
