// Package deploy holds no code: this directory carries the deployment files
// (container, Compose, Kubernetes, Quadlet, systemd, firewalld, logrotate,
// nfpm packaging, example configuration) and the tests in package
// deploy_test that check them against each other and against the built-in
// defaults, build the image and the packages, and install the deb.
package deploy
