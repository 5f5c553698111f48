package http

import (
	"net/http"
	"time"

	"golang.org/x/time/rate"

	"stagesub.dev/app/loginlimit"
)

// Defaults of the password-attempt limit (staff login and the current
// password of a password change): per client one attempt every 10 s with a
// burst of 10; over all clients loginlimit.DefaultGlobalRate and
// loginlimit.DefaultGlobalBurst (1/s, burst 30).
const (
	DefaultLoginRate  = rate.Limit(0.1)
	DefaultLoginBurst = 10
	loginRetryAfter   = "60" // seconds, the Retry-After of a 429
)

// allowAttempt reserves a password attempt for r's client. When the client
// or everyone is over the limit it answers 429 with Retry-After (a page
// rendered by tooMany) and reports false.
func (s *Server) allowAttempt(w http.ResponseWriter, r *http.Request, what string, tooMany func()) (refund func(), ok bool) {
	client := loginlimit.ClientIP(r, s.cfg.TrustedProxies)
	refund, ok = s.limit.Reserve(client, time.Now())
	if !ok {
		s.log.Warn("password attempts rate limited", "what", what, "client", client, "request_id", r.Header.Get(HeaderRequestID))
		w.Header().Set("Retry-After", loginRetryAfter)
		tooMany()
		return nil, false
	}
	return refund, true
}
