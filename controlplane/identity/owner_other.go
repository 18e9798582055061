//go:build !unix

package identity

import (
	"os"
	"strconv"
)

// fileOwner reports that ownership is unknown on this platform.
func fileOwner(os.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }

// processUID is -1: no user IDs on this platform.
func processUID() int { return -1 }

// groupIsOurs is true: no group checks on this platform.
func groupIsOurs(int) bool { return true }

// userName is uid as a number.
func userName(uid int) string { return strconv.Itoa(uid) }

// groupName is gid as a number.
func groupName(gid int) string { return strconv.Itoa(gid) }

// chownLikeDir does nothing on this platform.
func chownLikeDir(string, string) error { return nil }
