//go:build !linux

package proxy

// peek is a no-op where MSG_PEEK|MSG_DONTWAIT is not wired up: a pooled
// connection the upstream closed is then found by the request itself and
// retried under the stale-connection rules (see Upstream).
func (pc *upConn) peek(fd uintptr) bool { return true }

func peekAlive(n int, err error) bool { return true }
