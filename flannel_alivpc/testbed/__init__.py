"""Local stand-ins that make the whole system run on one machine: a real etcd server
process and the demo. Used by `flannel-alivpc demo`, the tests and the benchmarks."""
