// Package buildinfo holds the version and commit stamped into the binary at
// link time (see the Makefile's LDFLAGS).
package buildinfo

import "runtime/debug"

// Version is the release version, set with -ldflags -X.
var Version = "dev"

// Commit is the source commit, set with -ldflags -X.
var Commit = ""

// CommitHash returns Commit, or the VCS revision Go recorded in the binary
// when no commit was stamped, or "unknown".
func CommitHash() string {
	if Commit != "" {
		return Commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
	}
	return "unknown"
}
