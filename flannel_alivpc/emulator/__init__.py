"""A local stand-in for the Alibaba Cloud VPC, ECS and SLB APIs and the ECS metadata service.

The official SDKs talk to it unmodified (only their endpoint is changed): RPC
requests are signed and verified, responses use the real shapes and spellings,
route changes are asynchronous and serialised per table, and faults can be
injected per action. See docs/emulator.md.
"""
