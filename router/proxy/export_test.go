package proxy

// Classify exposes classify to the external tests.
var Classify = classify

// IdleConns returns the number of pooled idle connections.
func (u *Upstream) IdleConns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.nidle
}
