package iperfrun

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
	"unsafe"
)

// atClkTck is the auxiliary-vector key of the kernel's clock tick rate
// (USER_HZ), the unit of utime and stime in /proc/<pid>/stat.
const atClkTck = 17

// clockTicks is USER_HZ as the kernel told this process, 100 when the
// auxiliary vector cannot be read (the value on every common Linux build).
var clockTicks = sync.OnceValue(func() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	word := int(unsafe.Sizeof(uintptr(0)))
	read := func(p []byte) uint64 {
		if word == 8 {
			return binary.NativeEndian.Uint64(p)
		}
		return uint64(binary.NativeEndian.Uint32(p))
	}
	for len(b) >= 2*word {
		key, val := read(b), read(b[word:])
		b = b[2*word:]
		if key == atClkTck && val > 0 {
			return int64(val)
		}
	}
	return 100
})

// ProcessCPU returns the user plus system CPU time the process (all its
// threads) has used so far, from /proc/<pid>/stat.
func ProcessCPU(pid int) (time.Duration, error) {
	p := "/proc/" + strconv.Itoa(pid) + "/stat"
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", p, err)
	}
	return parseStat(b, clockTicks())
}

// parseStat reads utime and stime (fields 14 and 15) from a /proc/<pid>/stat
// line. The command name (field 2) may hold spaces and parentheses, so the
// fields are counted from the last ')'.
func parseStat(b []byte, ticksPerSecond int64) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat %q: no command name", b)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("parse stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse stat cpu field %q: %w", s, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / time.Duration(ticksPerSecond), nil
}
