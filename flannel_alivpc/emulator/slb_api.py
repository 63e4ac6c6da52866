"""SLB API 2014-05-15 (classic load balancers): filled in by the SLB work."""
