//go:build linux

package hostinfo

import (
	"errors"
	"testing"
)

// The live host gives sane values.
func TestLiveSnapshot(t *testing.T) {
	s := NewSampler()
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v (partial %+v)", err, snap)
	}
	t.Logf("live snapshot: %+v", snap)
	if snap.MemoryTotalMB == 0 || snap.MemoryUsedMB > snap.MemoryTotalMB {
		t.Fatalf("memory used %d / total %d MiB", snap.MemoryUsedMB, snap.MemoryTotalMB)
	}
	if snap.CPULoad < 0 || snap.CPULoad > 1 {
		t.Fatalf("cpu load %v outside [0,1]", snap.CPULoad)
	}
	for i, v := range snap.LoadAvg {
		if v < 0 {
			t.Fatalf("load avg[%d] = %v", i, v)
		}
	}
	if snap.MTU != 0 && (snap.MTU < 68 || snap.MTU > 65536) {
		t.Fatalf("mtu %d out of range", snap.MTU)
	}
	again, err := s.Snapshot()
	if err != nil || again.MemoryTotalMB != snap.MemoryTotalMB {
		t.Fatalf("second snapshot %+v, %v", again, err)
	}
}

func TestLiveDefaultRouteMTU(t *testing.T) {
	mtu, err := DefaultRouteMTU()
	if errors.Is(err, ErrNoDefaultRoute) {
		t.Skip("this host has no default route")
	}
	if err != nil {
		t.Fatal(err)
	}
	if mtu < 68 || mtu > 65536 {
		t.Fatalf("mtu %d out of range", mtu)
	}
	t.Logf("default route mtu %d", mtu)
}

func TestLiveClockSynced(t *testing.T) {
	synced, err := ClockSynced()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("clock synced: %v", synced)
}
