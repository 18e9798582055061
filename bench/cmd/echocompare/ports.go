package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
)

// freePort returns a port of 127.0.0.1 that is free for UDP, and for TCP
// too when tcp is set (our control port serves TLS over TCP and QUIC), at
// the time of the call.
func freePort(tcp bool) (int, error) {
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		if !tcp {
			_ = pc.Close()
			return port, nil
		}
		ln, terr := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = pc.Close()
		if terr == nil {
			_ = ln.Close()
			return port, nil
		}
	}
	return 0, errors.New("find a free port: no port free for both TCP and UDP")
}

// freeRange returns the first port of n consecutive ports of 127.0.0.1 that
// are free for UDP and TCP, below the usual ephemeral range (32768+) so
// that client sockets do not take them meanwhile, and not containing avoid.
func freeRange(n, avoid int) (int, error) {
	const lo, hi = 20000, 32768
	for range 50 {
		base := lo + rand.IntN(hi-lo-n)
		if avoid >= base && avoid < base+n {
			continue
		}
		if rangeFree(base, n) {
			return base, nil
		}
	}
	return 0, fmt.Errorf("find %d free consecutive ports in %d-%d: none after 50 tries", n, lo, hi-1)
}

func rangeFree(base, n int) bool {
	for port := base; port < base+n; port++ {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		ln, err := net.Listen("tcp", addr)
		_ = pc.Close()
		if err != nil {
			return false
		}
		_ = ln.Close()
	}
	return true
}
