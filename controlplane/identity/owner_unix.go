//go:build unix

package identity

import (
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"
)

// fileOwner returns the owner and group of fi.
func fileOwner(fi os.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

// processUID is the effective user ID, or -1 where there is none.
func processUID() int { return os.Geteuid() }

// groupIsOurs reports whether this process belongs to group gid (root's
// group counts: it is the group of a Secret mounted without fsGroup).
func groupIsOurs(gid int) bool {
	if gid == 0 || gid == os.Getegid() {
		return true
	}
	groups, err := os.Getgroups()
	return err == nil && slices.Contains(groups, gid)
}

// userName is uid's login name, or the number when it has none.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// groupName is gid's name, or the number when it has none.
func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}

// chownLikeDir gives path the owner and group of its directory when this
// process runs as root and the directory belongs to another user: a key
// written by `sudo reflector show-id` stays readable by the service user
// that owns the state directory.
func chownLikeDir(path, dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	uid, gid, ok := fileOwner(st)
	if !ok || uid == 0 {
		return nil
	}
	return os.Lchown(path, uid, gid)
}
