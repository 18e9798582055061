// Package bench holds the data plane's measurements: `go test -bench`
// benchmarks of our iperf3 client against our iperf3 server in-process over
// loopback, and a network-namespace test that checks the throughput our server
// reports against stock iperf3 under the same tc shaping. The side-by-side
// comparison with stock `iperf3 -s` lives in bench/cmd/compare
// (`make bench-compare`).
package bench
