package route

// MaxHostLen is the longest host name (without port) the router accepts.
// DNS names are at most 253 characters.
const MaxHostLen = 253

// NormalizeHost returns host lowercased, without a port and without one
// trailing dot, written into buf when it has to change case; ok is false when
// host is not a plausible DNS name (empty, too long, bad characters, an
// unbalanced IPv6 bracket, a non-numeric port).
//
// The result aliases host when host needs no case change, and aliases buf
// otherwise, so NormalizeHost never allocates. IPv6 literals ("[::1]:80")
// are returned with their brackets and without the port; they never match a
// route. Characters allowed in a name: a-z, A-Z, 0-9, '-', '_', '.'.
func NormalizeHost(host string, buf *[MaxHostLen]byte) (name []byte, s string, ok bool) {
	if host == "" {
		return nil, "", false
	}
	h := host
	if h[0] == '[' {
		// IPv6 literal, optionally with a port.
		end := -1
		for i := 1; i < len(h); i++ {
			if h[i] == ']' {
				end = i
				break
			}
		}
		if end < 0 {
			return nil, "", false
		}
		rest := h[end+1:]
		if rest != "" && !validPort(rest) {
			return nil, "", false
		}
		h = h[:end+1]
		if len(h) > MaxHostLen {
			return nil, "", false
		}
		upper := false
		for i := 1; i < len(h)-1; i++ {
			c := h[i]
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c == ':', c == '.':
			case c >= 'A' && c <= 'F':
				upper = true
			default:
				return nil, "", false
			}
		}
		return lower(h, upper, buf)
	}
	// Strip ":port" (a name never contains ':').
	for i := 0; i < len(h); i++ {
		if h[i] == ':' {
			if !validPort(h[i:]) {
				return nil, "", false
			}
			h = h[:i]
			break
		}
	}
	if len(h) > 0 && h[len(h)-1] == '.' {
		h = h[:len(h)-1]
	}
	if h == "" || len(h) > MaxHostLen {
		return nil, "", false
	}
	upper := false
	prevDot := true // a leading dot is an empty label
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			prevDot = false
		case c >= 'A' && c <= 'Z':
			upper = true
			prevDot = false
		case c == '.':
			if prevDot {
				return nil, "", false // empty label
			}
			prevDot = true
		default:
			return nil, "", false
		}
	}
	if prevDot {
		return nil, "", false // "a.." after stripping one dot
	}
	return lower(h, upper, buf)
}

// lower returns h as is when it has no upper-case letters, else its
// lowercase copy in buf (len(h) <= MaxHostLen).
func lower(h string, upper bool, buf *[MaxHostLen]byte) ([]byte, string, bool) {
	if !upper {
		return nil, h, true
	}
	if len(h) > MaxHostLen {
		return nil, "", false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return buf[:len(h)], "", true
}

// validPort reports whether p is ":" followed by 1 to 5 digits.
func validPort(p string) bool {
	if len(p) < 2 || len(p) > 6 || p[0] != ':' {
		return false
	}
	for i := 1; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

// CanonicalHost is NormalizeHost for callers off the hot path: it returns the
// normalized host as a string ("" when host is not valid). It allocates when
// host contains upper-case letters.
func CanonicalHost(host string) string {
	var buf [MaxHostLen]byte
	b, s, ok := NormalizeHost(host, &buf)
	if !ok {
		return ""
	}
	if b != nil {
		return string(b)
	}
	return s
}
