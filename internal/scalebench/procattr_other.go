//go:build !linux

package main

import "syscall"

// childAttr has no parent-death signal outside Linux: the bench stops its
// servers on exit and on SIGINT/SIGTERM only.
func childAttr() *syscall.SysProcAttr { return nil }
