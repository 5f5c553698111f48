package proxy

import (
	"bufio"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// writeHead writes the head of a bodyless GET or HEAD request to w as
// (*http.Request).Write would: the same request line, Host, User-Agent and
// header lines, with the same validation and clean-ups (invalid header
// names dropped, CR and LF in values turned into spaces, values trimmed),
// but in the header map's order instead of sorted (the order of distinct
// fields carries no meaning, RFC 9110 §5.3) and without fmt or a sorted
// copy of the header: the upstream request's head is the one net/http
// writer on the proxy path that cost a measurable share of its CPU.
//
// It covers only the common case and reports false, having written
// nothing, for anything else, which the caller then writes with
// Request.Write: another method, a body or trailer, Close, an opaque URL,
// no User-Agent key in the header (Request.Write would add Go's), a Host
// that is not plain ASCII or has an IPv6 zone, or a control byte in the
// request target. TestWriteHead compares the two writers' output.
func writeHead(w *bufio.Writer, req *http.Request) bool {
	if (req.Method != http.MethodGet && req.Method != http.MethodHead) || hasBody(req) ||
		req.ContentLength != 0 || len(req.TransferEncoding) != 0 || len(req.Trailer) != 0 ||
		req.Close || req.URL.Opaque != "" {
		return false
	}
	ua, ok := req.Header["User-Agent"]
	if !ok {
		return false
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !plainHost(host) {
		return false
	}
	path := req.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	query := req.URL.ForceQuery || req.URL.RawQuery != ""
	if hasCTL(path) || hasCTL(req.URL.RawQuery) {
		return false
	}

	w.WriteString(req.Method)
	w.WriteByte(' ')
	w.WriteString(path)
	if query {
		w.WriteByte('?')
		w.WriteString(req.URL.RawQuery)
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	if len(ua) > 0 && ua[0] != "" {
		writeField(w, "User-Agent", ua[0])
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue // Request.Write's reqWriteExcludeHeader
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			writeField(w, k, v)
		}
	}
	w.WriteString("\r\n")
	return true
}

// writeField writes the header line "k: v" with v cleaned as net/http does.
func writeField(w *bufio.Writer, k, v string) {
	if strings.ContainsAny(v, "\r\n") {
		v = newlineToSpace.Replace(v)
	}
	v = textproto.TrimString(v)
	w.WriteString(k)
	w.WriteString(": ")
	w.WriteString(v)
	w.WriteString("\r\n")
}

var newlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

// plainHost reports whether Request.Write would send host unchanged: valid
// as a Host header, ASCII (no Punycode conversion) and without an IPv6 zone.
func plainHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 || host[i] == '%' {
			return false
		}
	}
	return httpguts.ValidHostHeader(host)
}

// hasCTL reports whether s has a control byte (Request.Write refuses them in
// the request target).
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}
