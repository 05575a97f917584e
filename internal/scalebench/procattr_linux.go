package main

import "syscall"

// childAttr makes a nats-server child receive SIGKILL when the bench's
// thread that started it ends, so a bench that is itself killed leaves no
// server running.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
