//go:build !linux

package iperf3proto

import "net"

// truncDiscard is not available on this system: ok is always false.
func truncDiscard(_ net.Conn, _ int, _ *ByteBudget, _ func(int)) (total int64, ok bool, err error) {
	return 0, false, nil
}

// drainQueued has nothing to do where no receive low-watermark is set.
func drainQueued(_ net.Conn, _ *ByteBudget) int64 { return 0 }
