package secrets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// maxFileSize bounds what a file: reference reads: keystores are kilobytes,
// and a reference to /dev/zero or a log file must not exhaust memory.
const maxFileSize = 16 << 20

var _ Source = fileSource{}

// fileSource reads file: references from the worker's file system.
type fileSource struct {
	baseDir string
	v       versioner
}

// NewFileSource returns the Source for file: references. A relative path is
// relative to baseDir, the directory of the config file that named it, so a
// config and its keystores can move together; baseDir "" means the
// worker's working directory. Its Version combines the file's identity (inode), size and modification
// time with a keyed hash of the bytes read, so a rewrite is seen even within
// one mtime tick and the Version always matches the Data returned with it.
func NewFileSource(baseDir string) Source { return fileSource{baseDir: baseDir, v: newVersioner()} }

// Fetch reads the file that ref names.
func (s fileSource) Fetch(ctx context.Context, ref Ref) (Secret, error) {
	path, err := filePath(ref.Body)
	if err != nil {
		return Secret{}, err
	}
	if s.baseDir != "" && !filepath.IsAbs(path) {
		path = filepath.Join(s.baseDir, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return Secret{}, fileError(err, path)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Secret{}, fileError(err, path)
	}
	if st.IsDir() {
		return Secret{}, jobs.Errorf(jobs.CodeKeystoreInvalid, "file %s is a directory, not a keystore or password file; check the reference's path", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return Secret{}, fileError(err, path)
	}
	if len(data) > maxFileSize {
		return Secret{}, jobs.Errorf(jobs.CodeKeystoreInvalid, "file %s is larger than %d MiB, too large for a keystore or password; check the reference's path", path, maxFileSize>>20)
	}
	version := fmt.Sprintf("%s-%d-%d-%s", fileID(st), st.Size(), st.ModTime().UnixNano(), s.v.sum(data))
	return Secret{Data: data, Version: version}, nil
}

// fileError classifies an error of opening or reading path.
func fileError(err error, path string) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return jobs.Wrap(errors.Join(ErrNotFound, err), jobs.CodeSecretUnavailable,
			"file %s does not exist on this worker; check the reference's path and that the file is deployed", path).WithRetryable(false)
	case errors.Is(err, fs.ErrPermission):
		return jobs.Wrap(err, jobs.CodeSecretUnavailable,
			"file %s is not readable by the worker's user (permission denied); fix the file's owner or mode", path).WithRetryable(false)
	default:
		return jobs.Wrap(err, jobs.CodeSecretUnavailable, "file %s could not be read (I/O error); check the worker's disk", path)
	}
}
