// Package deploy holds mtlsrelay's deployment files: the container image
// (Dockerfile), a compose file with a NATS cluster, Vault, two workers and a
// demo partner (compose.yaml, config/), and Kubernetes manifests with KEDA
// autoscaling on consumer lag (k8s/). It has no Go code of its own: its
// test validates the files, with the schema checker in ./validate.
package deploy
