package server

// quicGuard admits QUIC handshakes on 4000/udp.
type quicGuard struct{}
