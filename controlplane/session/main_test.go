package session_test

import (
	"os"
	"testing"

	"github.com/packetparamedic/reflector/internal/testutil"
)

// TestMain removes the binary testutil.ReflectorBinary builds for the
// binServer tests.
func TestMain(m *testing.M) { os.Exit(testutil.Run(m)) }
