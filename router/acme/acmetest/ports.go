package acmetest

import (
	"net"
	"testing"
)

// FreePort returns a loopback port that is free for both TCP and UDP at the
// time of the call. Another process may take it before it is used; callers
// that start servers retry on a bind failure.
func FreePort(tb testing.TB) int {
	tb.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("acmetest: free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", l.Addr().String())
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	tb.Fatal("acmetest: no free TCP+UDP port found")
	return 0
}

func splitHostPort(addr string) (host, port string, err error) { return net.SplitHostPort(addr) }
