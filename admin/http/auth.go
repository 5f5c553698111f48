package http

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strconv"
	"strings"
	"sync"
	"time"

	"stagesub.dev/admin/password"
)

// Cookie names. The __Host- prefix makes browsers refuse these cookies
// unless they are Secure, host-only and for path "/": a tenant app on a
// sibling subdomain cannot plant or overwrite them.
const (
	SessionCookie = "__Host-stagesub_admin"
	CSRFCookie    = "__Host-stagesub_admin_csrf" // pre-login CSRF nonce
	csrfField     = "csrf_token"
)

// session is the decoded content of a valid session cookie.
type session struct {
	user    string
	expires time.Time
	nonce   string // random per login; CSRF tokens of logged-in forms derive from it
}

// keys derives the MAC keys from the configured session key and the
// password hash, so changing the password invalidates every session.
type keys struct {
	session []byte
	csrf    []byte
}

func deriveKeys(secret []byte, passwordHash string) keys {
	d := func(label string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(label))
		m.Write([]byte{0})
		m.Write([]byte(passwordHash))
		return m.Sum(nil)
	}
	return keys{session: d("session"), csrf: d("csrf")}
}

var b64 = base64.RawURLEncoding

func mac(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

func randomToken() string {
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("http: crypto/rand: " + err.Error()) // never fails on supported platforms
	}
	return b64.EncodeToString(b[:])
}

// encodeSession returns the cookie value "user.expires.nonce.mac" (user
// base64url-encoded).
func (k keys) encodeSession(s session) string {
	payload := b64.EncodeToString([]byte(s.user)) + "." + strconv.FormatInt(s.expires.Unix(), 10) + "." + s.nonce
	return payload + "." + b64.EncodeToString(mac(k.session, payload))
}

// decodeSession verifies a cookie value; ok is false for anything forged,
// malformed or expired at now.
func (k keys) decodeSession(v string, now time.Time) (s session, ok bool) {
	i := strings.LastIndexByte(v, '.')
	if i < 0 {
		return s, false
	}
	payload, sig := v[:i], v[i+1:]
	got, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac(k.session, payload)) {
		return s, false
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 3 {
		return s, false
	}
	user, err := b64.DecodeString(parts[0])
	if err != nil {
		return s, false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || !now.Before(time.Unix(exp, 0)) {
		return s, false
	}
	return session{user: string(user), expires: time.Unix(exp, 0), nonce: parts[2]}, true
}

// csrfToken returns the form token bound to nonce (a session's nonce, or
// the pre-login CSRF cookie).
func (k keys) csrfToken(nonce string) string { return b64.EncodeToString(mac(k.csrf, nonce)) }

func (k keys) validCSRF(nonce, token string) bool {
	if nonce == "" || token == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(k.csrfToken(nonce)), []byte(token)) == 1
}

// credentials checks the superadmin's user name and password. A correct
// pair is remembered (as a MAC, not the password) so scripts that send HTTP
// Basic auth on every request do not pay for a password hash each time.
type credentials struct {
	user string
	hash string
	key  []byte

	mu   sync.Mutex
	good []byte // MAC of the last verified user/password pair
}

func (c *credentials) check(user, pw string) bool {
	m := mac(c.key, user, pw)
	c.mu.Lock()
	good := c.good
	c.mu.Unlock()
	if good != nil && hmac.Equal(m, good) {
		return true
	}
	// Always verify, even for a wrong user name: same cost either way.
	okPW := password.Verify(c.hash, pw) == nil
	okUser := subtle.ConstantTimeCompare([]byte(user), []byte(c.user)) == 1
	if okPW && okUser {
		c.mu.Lock()
		c.good = m
		c.mu.Unlock()
		return true
	}
	return false
}

// revocations holds the nonces of sessions ended by logout, each until its
// session would have expired anyway; after that the signature check refuses
// the cookie by itself, so the entry is dropped.
//
// Invariants: the set is in memory and per process. With several admin
// replicas behind the router, a logout revokes the session on the replica
// that served it only; rotate STAGESUB_SESSION_KEY (or change the password
// hash) to end every session everywhere. The set is bounded by the number of
// logins within one session TTL, which the login rate limit caps.
type revocations struct {
	mu    sync.Mutex
	until map[string]time.Time // nonce → session expiry
}

// add revokes nonce until expires, dropping entries that expired by now.
func (v *revocations) add(nonce string, expires, now time.Time) {
	if nonce == "" {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for n, exp := range v.until {
		if !now.Before(exp) {
			delete(v.until, n)
		}
	}
	v.until[nonce] = expires
}

// has reports whether the session with nonce was revoked and has not
// expired at now.
func (v *revocations) has(nonce string, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	exp, ok := v.until[nonce]
	return ok && now.Before(exp)
}
