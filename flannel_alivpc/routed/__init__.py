"""The per-node route daemon.

It takes this node's subnet lease from etcd exactly as flanneld would, writes
``subnet.env`` for the CNI plugin, keeps the lease renewed, and follows every
node's lease so that the VPC route table (or the VXLAN fallback) carries a
route to each leased subnet. It exits when its own lease is lost, as flanneld
does ("Lease has been revoked. Shutting down daemon.").
"""
