package iperf3proto

import (
	"strconv"
	"testing"
)

func TestSmoke(t *testing.T) {
	ts := startServer(t, "127.0.0.1", ServerConfig{}, 1)
	j, out := runIperf3(t, "-c", "127.0.0.1", "-p", strconv.Itoa(ts.port), "-J", "-t", "1")
	r := ts.result(t)
	t.Logf("%s", out)
	t.Logf("%+v", r)
	if j.Error != "" {
		t.Fatal(j.Error)
	}
}
