package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"

	"stagesub.dev/router/route"
)

// The proxy path. Every request a route proxies goes through forward except
// protocol upgrades (an Upgrade header) and "Expect: 100-continue"; those go
// through httputil.ReverseProxy, which owns hijacking the client connection
// and the 100-continue exchange. forward does what ReverseProxy does for a
// plain request, rule for rule (the tests run both paths against the same
// cases), without ReverseProxy's per-request request and header clones,
// context values and client trace:
//   - the upstream request is a shallow copy of the client's, with its own
//     URL and a new header map (values shared, never modified);
//   - the header leaves out the hop-by-hop headers (isHopHeader and those
//     named in Connection), the client's X-StageSub-* and its forwarding
//     headers (Forwarded, X-Forwarded-*, also spelt with "_"; see
//     isClientOnlyHeader), which setForwarded then sets; "TE: trailers" is
//     kept, and an absent User-Agent stays absent; trailers the client
//     announced are announced, their values are not passed on;
//   - the query loses unparsable parameters, as with ReverseProxy
//     (cleanQuery);
//   - the response loses its hop-by-hop headers and the upstream's
//     X-Request-Id; trailers are announced and passed on; 1xx responses
//     (103 Early Hints) are passed on; a 101 without an upgrade request is a
//     bad gateway;
//   - the body is streamed with a pooled buffer; for event streams and
//     responses without a Content-Length the headers are flushed at once
//     and the body after every write; a
//     failure while streaming aborts the client's response
//     (http.ErrAbortHandler), since its status line is already sent.

// isHopHeader reports whether the canonical header key k is hop-by-hop,
// removed in both directions besides those named in Connection
// (httputil.ReverseProxy's list).
func isHopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// isForwardingHeader reports whether the canonical header key k is one of
// the client's forwarding headers, which the router replaces.
func isForwardingHeader(k string) bool {
	switch k {
	case "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return false
}

// Shared header values; never modified.
var (
	teTrailers  = []string{"trailers"}
	noUserAgent = []string{""} // keeps net/http from sending its own
)

// viaReverseProxy reports whether r needs httputil.ReverseProxy: a protocol
// upgrade or an expected 100-continue.
func viaReverseProxy(r *http.Request) bool {
	return r.Header["Upgrade"] != nil || r.Header["Expect"] != nil
}

// forward proxies r (see the path's rules above) through h.upstream, which
// is not nil. st.route has backends.
func (h *Handler) forward(rw *responseWriter, r *http.Request, st *reqState) {
	st.rw = rw
	out := &st.out
	*out = *r // the same context, method, body and trailer
	st.outURL = *r.URL
	out.URL = &st.outURL
	out.URL.Scheme = "http"
	out.URL.RawQuery = cleanQuery(r.URL.RawQuery)
	out.RequestURI = ""
	out.Close = false
	out.Header = h.upstreamHeader(r, st)
	// The client's announced trailer names, without values: net/http fills
	// r.Trailer with every trailer field the client sends, announced or
	// not, and those must not reach the upstream unfiltered (as with
	// ReverseProxy, which clones the map before the body is read).
	out.Trailer = r.Trailer.Clone()
	if r.ContentLength == 0 {
		out.Body = nil
	}
	if out.Body != nil && st.replay == nil { // a replayed body is the router's own
		// The upstream client may still read the body after the handler
		// returned (an upload the upstream answered early); reading the
		// client's body then is not allowed.
		b := &handlerBody{rc: out.Body}
		defer b.Close()
		out.Body = b
	}
	resp, err := h.roundTrip(st, out)
	if err != nil {
		h.fail(rw, r, st, err)
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		_ = resp.Body.Close()
		h.fail(rw, r, st, errors.New("proxy: upstream switched protocols without an upgrade request"))
		return
	}
	removeHopByHop(resp.Header)
	delete(resp.Header, HeaderRequestID) // the client gets the router's id
	hdr := rw.Header()
	for k, vv := range resp.Header {
		if prior, ok := hdr[k]; ok {
			hdr[k] = append(prior, vv...)
		} else {
			hdr[k] = vv
		}
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		hdr.Add("Trailer", strings.Join(keys, ", "))
	}
	rw.WriteHeader(resp.StatusCode)
	flush := flushEachWrite(resp)
	if flush {
		rw.Flush() // a stream's headers go out before its first byte
	}
	if err := h.copyBody(rw, resp.Body, flush); err != nil {
		_ = resp.Body.Close()
		if r.Context().Value(http.ServerContextKey) != nil {
			panic(http.ErrAbortHandler) // the server recovers it and drops the connection
		}
		h.log.Warn("response body copy failed", "tenant", st.route.Label, "err", err)
		return
	}
	_ = resp.Body.Close() // now, to populate resp.Trailer
	if len(resp.Trailer) > 0 {
		rw.Flush() // forces chunking, so the trailers can follow
	}
	for k, vv := range resp.Trailer {
		if len(resp.Trailer) != announced {
			k = http.TrailerPrefix + k
		}
		for _, v := range vv {
			hdr.Add(k, v)
		}
	}
}

// upstreamHeader returns the header the upstream receives for r (see the
// path's rules above); r.Header is not modified.
func (h *Handler) upstreamHeader(r *http.Request, st *reqState) http.Header {
	in := r.Header
	out := make(http.Header, len(in)+6)
	for k, v := range in {
		if !isHopHeader(k) && !isClientOnlyHeader(k) {
			out[k] = v
		}
	}
	deleteConnectionTokens(out, in["Connection"])
	if httpguts.HeaderValuesContainsToken(in["Te"], "trailers") {
		out["Te"] = teTrailers
	}
	if _, ok := out["User-Agent"]; !ok {
		out["User-Agent"] = noUserAgent
	}
	h.setForwarded(out, r, st)
	return out
}

// setForwarded sets the router's headers on out, the upstream request's
// header for r, which has no X-Forwarded-* and no X-StageSub-* header:
// X-Forwarded-For (appended to a trusted peer's, else the peer alone),
// X-Forwarded-Proto and -Host (a trusted peer's, else the router's own),
// X-Request-Id and, for a tenant, X-StageSub-Tenant.
func (h *Handler) setForwarded(out http.Header, r *http.Request, st *reqState) {
	in := r.Header
	vals := make([]string, 5) // one allocation for the five values
	set := func(i int, k, v string) {
		vals[i] = v
		out[k] = vals[i : i+1 : i+1]
	}
	xff := st.peerString()
	if st.trusted {
		if prior := strings.Join(in.Values("X-Forwarded-For"), ", "); prior != "" {
			xff = prior + ", " + xff
		}
	}
	set(0, "X-Forwarded-For", xff)
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	if v := in.Get("X-Forwarded-Proto"); st.trusted && (v == "http" || v == "https") {
		proto = v
	}
	set(1, "X-Forwarded-Proto", proto)
	fwdHost := r.Host
	if v := in.Get("X-Forwarded-Host"); st.trusted && v != "" {
		fwdHost = v
	}
	set(2, "X-Forwarded-Host", fwdHost)
	set(3, HeaderRequestID, st.requestID)
	if st.route.Kind == route.KindTenant {
		set(4, HeaderTenant, st.route.Tenant)
	}
}

// isClientOnlyHeader reports whether a client's header k must not reach an
// upstream because the router sets its own: X-StageSub-* and the forwarding
// headers, in any case and with "_" for "-" (CGI-style upstreams read
// "X-Stagesub_Tenant" as the router's X-StageSub-Tenant).
func isClientOnlyHeader(k string) bool {
	if strings.IndexByte(k, '_') >= 0 {
		k = textproto.CanonicalMIMEHeaderKey(strings.ReplaceAll(k, "_", "-"))
	}
	return isForwardingHeader(k) ||
		len(k) >= len(headerPrefix) && strings.EqualFold(k[:len(headerPrefix)], headerPrefix)
}

// deleteConnectionTokens deletes from h the headers named in the values of a
// Connection header.
func deleteConnectionTokens(h http.Header, connection []string) {
	for _, f := range connection {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(sf))
			}
		}
	}
}

// removeHopByHop removes the hop-by-hop headers from h: those named in
// Connection, then those isHopHeader names.
func removeHopByHop(h http.Header) {
	deleteConnectionTokens(h, h["Connection"])
	for k := range h {
		if isHopHeader(k) {
			delete(h, k)
		}
	}
}

// cleanQuery removes the parameters url.ParseQuery rejects (a semicolon, a
// bad percent escape) by re-encoding the query, as httputil.ReverseProxy
// does, so the router and the upstream never read a query differently.
// A valid query is returned as is.
func cleanQuery(s string) string {
	if s == "" {
		return s
	}
	if queryParamsLimited || strings.Count(s, "&") >= maxQueryParams {
		return reencodeQuery(s) // what url.ParseQuery refuses, the upstream never gets
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencodeQuery(s)
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return reencodeQuery(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

// maxQueryParams is net/url's default limit on a query's parameters: a
// query with more fails url.ParseQuery, and ReverseProxy then sends none
// (keep in sync with net/url). queryParamsLimited is set when the
// urlmaxqueryparams GODEBUG setting is in the environment; ReverseProxy then
// re-encodes every query, so the limit applies whatever it is.
const maxQueryParams = 10000

var queryParamsLimited = strings.Contains(os.Getenv("GODEBUG"), "urlmaxqueryparams=")

func reencodeQuery(s string) string {
	v, _ := url.ParseQuery(s)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// flushEachWrite reports whether resp's body is passed on a write at a
// time: an event stream, or a body of unknown length (a stream).
func flushEachWrite(resp *http.Response) bool {
	if resp.ContentLength == -1 {
		return true
	}
	ct := resp.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// copyBody streams body to rw with a pooled buffer, flushing after each
// write when flush is set. A read error other than the end of the body or
// a cancellation is logged.
func (h *Handler) copyBody(rw *responseWriter, body io.Reader, flush bool) error {
	bp := h.bufferPool.get()
	defer h.bufferPool.put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf)
		if rerr != nil && rerr != io.EOF && !errors.Is(rerr, context.Canceled) {
			h.log.Warn("upstream body read failed", "err", rerr)
		}
		if n > 0 {
			nw, werr := rw.Write(buf[:n])
			if werr != nil {
				return werr
			}
			if nw != n {
				return io.ErrShortWrite
			}
			if flush {
				rw.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// got1xx passes an upstream's 1xx response (103 Early Hints) to the client
// while the request is in flight.
func (st *reqState) got1xx(code int, header textproto.MIMEHeader) error {
	rw := st.rw
	hdr := rw.Header()
	for k, vv := range header {
		hdr[k] = append(hdr[k], vv...)
	}
	rw.WriteHeader(code)
	clear(hdr) // a 1xx's headers are not the final response's
	return nil
}

var errBodyAfterHandler = errors.New("proxy: request body read after the handler returned")

// handlerBody is the upstream request's body on the forward path: reads
// fail once the handler returned (Close), and Close leaves the client's body
// to net/http.
type handlerBody struct {
	rc     io.ReadCloser
	closed atomic.Bool
}

func (b *handlerBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errBodyAfterHandler
	}
	return b.rc.Read(p)
}

func (b *handlerBody) Close() error { b.closed.Store(true); return nil }
