//go:build linux

package proxy

import "syscall"

// peek runs in syscall.RawConn.Read: one non-blocking MSG_PEEK of a byte,
// recorded in pc.peekN and pc.peekErr. It returns true: never wait.
func (pc *upConn) peek(fd uintptr) bool {
	pc.peekN, _, pc.peekErr = syscall.Recvfrom(int(fd), pc.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return true
}

// peekAlive reports whether a peek found an idle connection: nothing to
// read yet (EAGAIN), rather than a close (0 bytes), stray data or an error.
func peekAlive(n int, err error) bool { return err == syscall.EAGAIN }
