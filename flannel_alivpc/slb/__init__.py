"""The SLB controller: Services of type LoadBalancer get an Alibaba Cloud Classic Load Balancer.

A sibling of ``routed`` (neither imports the other). Modules: ``annotations``
(every annotation name, parsed and checked), ``model`` and ``desired`` (the
wanted SLB, pure), ``plan`` (diff and ordered apply), ``controller`` (informers,
keyed work queue, passes), ``leader`` (Lease election), ``events`` (Kubernetes
Events), ``cli`` (``flannel-alivpc slb-controller``). See docs/slb-controller.md.
"""
