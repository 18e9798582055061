package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The key file rule (also in README "Identity key file"): the key must be
// a regular file of exactly 32 bytes that
//   - grants nothing to others (no o+r, o+w, o+x),
//   - is not writable by its group,
//   - is readable by its group only when this process belongs to that group
//     (root's group included): a Kubernetes Secret mounted with mode 0440
//     or 0400, owned by root or by the pod's fsGroup, passes,
//   - belongs to this process's user or to root (another user could
//     replace it); root itself reads a key of any owner (`sudo reflector
//     show-id` on the service user's state directory),
//   - sits in a directory that is not world-writable unless it has the
//     sticky bit (Secret volumes are 1777 tmpfs mounts, and read-only).
//
// Keys this program writes are 0600 and owned by the state directory's
// owner, so they always pass.

// checkKeyFile applies the rule to the opened key file's st. Every refusal
// names the owner, the mode and the command that fixes it.
func checkKeyFile(path string, st os.FileInfo) error {
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w %s: not a regular file (%v)", ErrBadKeyFile, path, st.Mode().Type())
	}
	perm := st.Mode().Perm()
	uid, gid, known := fileOwner(st)
	who := describeFile(st)
	bad := func(problem, fix string) error {
		return fmt.Errorf("%w %s: %s: %s (fix: %s)", ErrBadKeyFile, path, who, problem, fix)
	}
	switch {
	case perm&0o007 != 0:
		return bad("others can access it", "chmod 600 "+path)
	case perm&0o020 != 0:
		return bad("its group can write it", "chmod 600 "+path)
	case perm&0o040 != 0 && known && !groupIsOurs(gid):
		return bad("a group this service is not in can read it", "chmod 600 "+path)
	case known && processUID() > 0 && uid != 0 && uid != processUID():
		return bad("another user owns it and could replace it",
			fmt.Sprintf("sudo chown %s: %s", userName(processUID()), path))
	}
	dir := filepath.Dir(path)
	if dst, err := os.Stat(dir); err == nil && dst.Mode().Perm()&0o002 != 0 && dst.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("%w %s: its directory %s (mode %04o) is world-writable, anyone could replace the key (fix: chmod o-w %s)",
			ErrBadKeyFile, path, dir, dst.Mode().Perm(), dir)
	}
	return nil
}

// explainOpenError turns a permission error on opening the key into one
// that names the file's owner and mode, this process's user and the fix.
func explainOpenError(path string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("open identity key: %w", err)
	}
	me := userName(processUID())
	st, serr := os.Stat(path)
	if serr != nil {
		return fmt.Errorf("open identity key: %w (this process runs as user %s; fix: sudo chown -R %s: %s, or run as the user that owns the state directory)",
			err, me, me, filepath.Dir(path))
	}
	return fmt.Errorf("open identity key: %w: %s; this process runs as user %s (fix: sudo chown %s: %s, or run the command as the service user, e.g. sudo -u reflector reflector show-id)",
		err, describeFile(st), me, me, path)
}

// describeFile names a file's owner, group and mode for messages.
func describeFile(st os.FileInfo) string {
	if uid, gid, ok := fileOwner(st); ok {
		return fmt.Sprintf("owner %s (uid %d), group %s (gid %d), mode %04o", userName(uid), uid, groupName(gid), gid, st.Mode().Perm())
	}
	return fmt.Sprintf("mode %04o", st.Mode().Perm())
}
