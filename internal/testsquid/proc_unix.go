//go:build unix

package testsquid

import (
	"os/exec"
	"syscall"
)

// ownGroup puts cmd in a process group of its own, so that a stop reaches
// Squid and its helpers.
func ownGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// terminate asks cmd's process group to stop.
func terminate(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }

// kill stops cmd's process group at once.
func kill(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
