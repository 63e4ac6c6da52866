"""flannel-alivpc: Kubernetes pod networking on Alibaba Cloud.

Layers (checked by import-linter, see setup.cfg):

* ``core``      pure types, errors and helpers; imports nothing of ours.
* ``clients``   the only code that talks to external systems (Alibaba Cloud SDK,
                metadata service, etcd, netlink, Kubernetes); everything else sees
                the typed wrappers they export.
* ``emulator``  a local stand-in for the Alibaba Cloud APIs and metadata service.
* ``cli``       wiring and subcommands.
"""

__version__ = "0.1.0"
