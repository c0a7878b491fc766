
v1M
1>
3type.googleapis.com/envoy.config.cluster.v3.Cluster
a"a"x2"3type.googleapis.com/envoy.config.cluster.v3.Cluster*n2old