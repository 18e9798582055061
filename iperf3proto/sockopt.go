package iperf3proto

import (
	"fmt"
	"net"
	"runtime"

	"github.com/packetparamedic/reflector/dataplane/sockopt"
)

// hasTCPRetransmits reports whether TCP_INFO retransmit counts exist here.
const hasTCPRetransmits = runtime.GOOS == "linux"

// setCongestion selects the TCP congestion control algorithm.
func setCongestion(c net.Conn, name string) error { return sockopt.SetCongestion(c, name) }

// congestion returns the TCP congestion control algorithm in use.
func congestion(c net.Conn) (string, error) { return sockopt.Congestion(c) }

// setMSS sets TCP_MAXSEG.
func setMSS(c net.Conn, n int) error { return sockopt.SetMSS(c, n) }

// setPacingRate sets SO_MAX_PACING_RATE in bytes per second.
func setPacingRate(c net.Conn, bytesPerSec uint64) error {
	return sockopt.SetMaxPacingRate(c, bytesPerSec)
}

// tcpRetransmits returns the connection's total retransmitted segments, as
// iperf3 reports them.
func tcpRetransmits(c net.Conn) (int64, error) {
	info, err := sockopt.TCPInfo(c)
	if err != nil {
		return 0, fmt.Errorf("TCP retransmits: %w", err)
	}
	return int64(info.TotalRetrans), nil
}
