//go:build !linux

package selftest

// nicSpeeds is Linux-only (/sys/class/net).
func nicSpeeds() ([]nic, error) { return nil, ErrNotSupported }

// fdLimit is measured on Linux only.
func fdLimit() (soft, hard uint64, err error) { return 0, 0, ErrNotSupported }

// udpBufferMax is Linux-only (/proc/sys/net/core).
func udpBufferMax() (rmem, wmem int64, err error) { return 0, 0, ErrNotSupported }
