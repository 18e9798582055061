package main

import (
	"fmt"
	"runtime"

	"github.com/packetparamedic/reflector/internal/buildinfo"
)

func runVersion(e *env, args []string) error {
	fs := newFlags(e, "version")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "reflector %s (commit %s, %s, %s/%s)\n", buildinfo.Version, buildinfo.CommitHash(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
