package bench

import (
	"os"
	"testing"

	"github.com/packetparamedic/reflector/internal/testutil"
)

// TestMain removes the binary testutil.ReflectorBinary builds for the
// namespace tests.
func TestMain(m *testing.M) { os.Exit(testutil.Run(m)) }
