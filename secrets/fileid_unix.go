//go:build unix

package secrets

import (
	"io/fs"
	"strconv"
	"syscall"
)

// fileID returns the device and inode of a file, so replacing a file by
// renaming another over it (how Kubernetes and most tools rotate secrets)
// changes the Version even when size and mtime match.
func fileID(st fs.FileInfo) string {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return strconv.FormatUint(uint64(s.Dev), 16) + ":" + strconv.FormatUint(uint64(s.Ino), 16)
	}
	return "0"
}
