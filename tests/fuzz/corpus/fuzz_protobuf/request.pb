
2l
*sidecar~10.0.0.1~a.ns~ns.svc.cluster.locala3

ISTIO_VERSION1.20

LABELS*


appa"
rzab"3type.googleapis.com/envoy.config.cluster.v3.Cluster*n2;bad2
,type.googleapis.com/google.protobuf.Duration