package testutil

import (
	"testing"

	"github.com/packetparamedic/reflector/internal/freeport"
)

// PortRange returns the first of n consecutive loopback ports that are free
// for both TCP and UDP when it is called, for a data_port_range. The range
// lies below the kernel's ephemeral range (ip_local_port_range), so client
// sockets of tests running beside it do not take its ports meanwhile.
func PortRange(t testing.TB, n int) int {
	t.Helper()
	base, err := freeport.Range(n, 0)
	if err != nil {
		t.Fatal(err)
	}
	return base
}
