package broker

import (
	"net/url"
	"regexp"
	"strings"
)

// redacted replaces every hidden credential, as url.URL.Redacted does.
const redacted = "xxxxx"

var (
	// urlInText finds URLs in free text: quoted ones (which may hold spaces,
	// as in url.Parse's `parse "..."` errors) and bare ones.
	urlInText = regexp.MustCompile(`"[A-Za-z][A-Za-z0-9+.\-]*://[^"]*"|[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>` + "`" + `]+`)
	// secretParam finds key=value pairs whose key names a credential:
	// password, pass, passwd, pwd, secret, token, auth, api_key,
	// access_key... (also inside longer keys: sasl_password, auth_token).
	secretParam = regexp.MustCompile(`(?i)(^|[^A-Za-z0-9_.\-])((?:[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|credential|nkey|jwt|seed)[A-Za-z0-9_.\-]*|pass|auth|authorization|api[_\-]?key|access[_\-]?key|private[_\-]?key|sasl[_\-]?pass)=)([^&;\s"',)]*)`)
	// jsonSecret finds JSON members whose key names a credential, with a
	// string value (group 3) or a bare one (group 4): {"password":"..."}.
	jsonSecret = regexp.MustCompile(`(?i)("(?:[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|credential|nkey|jwt|seed)[A-Za-z0-9_.\-]*|pass|auth|authorization|api[_\-]?key|access[_\-]?key|private[_\-]?key)"\s*:\s*)(?:"((?:[^"\\]|\\.)*)"|([^\s,}\]"]+))`)
	// authHeader finds an Authorization header and its token
	// ("Authorization: Bearer X", "Authorization: X"), and a bearer token
	// of 8 characters or more anywhere ("Bearer X").
	authHeader = regexp.MustCompile(`(?i)(\b(?:proxy-)?authorization\s*:\s*(?:(?:bearer|basic|token|digest|nkey|jwt)\s+)?)([^\s,;"']+)|(\bbearer\s+)([A-Za-z0-9\-._~+/]{8,}=*)`)
	// bareToken finds credentials that stand out by their form: JWTs
	// (NATS user JWTs, OAuth tokens) and NATS nkey seeds.
	bareToken = regexp.MustCompile(`\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*|\bS[UNOACXPA][A-Z2-7]{50,}\b`)
	// urlListSep finds the commas of a list of URLs ("nats://a,nats://b").
	urlListSep = regexp.MustCompile(`,\s*[A-Za-z][A-Za-z0-9+.\-]*://`)
	// quoted finds double-quoted fragments, which error messages use to
	// quote a piece of their input.
	quoted = regexp.MustCompile(`"[^"]*"`)
)

// tokenSchemes carry a secret in a userinfo without password
// (nats://TOKEN@host, and NATS over websockets: ws://TOKEN@host).
var tokenSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

// RedactURL returns raw with its credentials replaced by "xxxxx": the
// userinfo password (the whole userinfo for the token schemes nats:// and
// tls://) and query parameters that name a credential (password=, pass=,
// token=, secret=, api_key=...). It works on strings url.Parse rejects too,
// textually: everything between "://" and the last "@" is the userinfo.
//
// A list of URLs ("nats://u:p@a:4222,nats://u:p@b:4222") has every entry
// redacted. A password with characters that should have been escaped ("#",
// "/", "?", "@"), which url.Parse takes for the end of the userinfo, is
// found textually (see splitAuthority): redis://u:123#abc@host does not
// show "123#abc".
func RedactURL(raw string) string {
	out, _ := redactURL(raw)
	return out
}

// redactURL returns the redacted URL (every entry of a list) and the
// secrets it hid.
func redactURL(raw string) (string, []string) {
	locs := urlListSep.FindAllStringIndex(raw, -1)
	if len(locs) == 0 {
		return redactOneURL(raw)
	}
	var b strings.Builder
	var secrets []string
	start := 0
	for _, l := range append(locs, []int{len(raw), len(raw)}) {
		out, sec := redactOneURL(raw[start:l[0]])
		b.WriteString(out)
		secrets = append(secrets, sec...)
		if l[0] < len(raw) {
			b.WriteByte(',')
			// Keep the spaces after the comma.
			for j := l[0] + 1; j < len(raw) && (raw[j] == ' ' || raw[j] == '\t'); j++ {
				b.WriteByte(raw[j])
			}
		}
		start = l[0] + 1
		for start < len(raw) && (raw[start] == ' ' || raw[start] == '\t') {
			start++
		}
	}
	return b.String(), secrets
}

// splitAuthority splits what follows "://" in a URL into its userinfo and
// the rest, textually, for passwords that url.Parse cuts: it ends the
// userinfo at the last "@" before the first "/", "?" or "#", or, when there
// is none, at the last "@" after it provided that the text between holds no
// "=" (which would make it a query: "?client_name=me@host"). ok is false
// when there is no userinfo. It errs on the side of secrets: an "@" in a
// path or fragment ("amqp://h/vhost@x", legal but rare) is taken for the
// end of a userinfo, so that "redis://123#abc@h" never shows "123".
func splitAuthority(rest string) (userinfo, after string, ok bool) {
	end := indexOrLen(rest, "/?#")
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		return rest[:at], rest[at+1:], true
	}
	if at := strings.LastIndex(rest, "@"); at > end && !strings.Contains(rest[end:at], "=") {
		return rest[:at], rest[at+1:], true
	}
	return "", rest, false
}

// DisplayURL is what String methods and errors show of an adapter URL:
// its scheme and hosts, never its userinfo, path, query or fragment, even
// when a password holds characters that should have been escaped. Every
// entry of a list is shown ("nats://a:4222,nats://b:4222"). Text with no
// "://" gives "".
func DisplayURL(raw string) string {
	var parts []string
	start := 0
	for _, l := range append(urlListSep.FindAllStringIndex(raw, -1), []int{len(raw), len(raw)}) {
		entry := strings.TrimSpace(raw[start:l[0]])
		start = l[0] + 1
		i := strings.Index(entry, "://")
		if i < 0 {
			continue
		}
		_, rest, _ := splitAuthority(entry[i+3:])
		parts = append(parts, entry[:i+3]+rest[:indexOrLen(rest, "/?#")])
	}
	return strings.Join(parts, ",")
}

// redactOneURL is redactURL of one URL.
func redactOneURL(raw string) (string, []string) {
	var secrets []string
	i := strings.Index(raw, "://")
	if i < 0 {
		return redactParams(raw, &secrets), secrets
	}
	scheme := strings.ToLower(raw[:i])
	// A userinfo url.Parse does not see (a password cut at "#", "/", "?")
	// is redacted textually.
	ui, _, hasUI := splitAuthority(raw[i+3:])
	if u, err := url.Parse(raw); err == nil && u.Scheme != "" && u.Opaque == "" && (!hasUI || u.User != nil && u.User.String() == ui) {
		if u.User != nil {
			name := u.User.Username()
			if pw, ok := u.User.Password(); ok {
				secrets = append(secrets, pw)
				u.User = url.UserPassword(name, redacted)
			} else if tokenSchemes[scheme] && name != "" {
				secrets = append(secrets, name)
				u.User = url.User(redacted)
			}
		}
		u.RawQuery = redactParams(u.RawQuery, &secrets)
		return u.String(), secrets
	}
	rest := raw[i+3:]
	out := raw[:i+3]
	if userinfo, _, ok := splitAuthority(rest); ok {
		at := len(userinfo)
		if c := strings.Index(userinfo, ":"); c >= 0 {
			secrets = appendSecret(secrets, userinfo[c+1:])
			out += userinfo[:c+1] + redacted
		} else if tokenSchemes[scheme] && userinfo != "" {
			secrets = appendSecret(secrets, userinfo)
			out += redacted
		} else {
			out += userinfo
		}
		rest = rest[at:]
	} else if auth := rest[:indexOrLen(rest, "/?#")]; !strings.HasSuffix(auth, "]") {
		// No "@": a "user:password" cut short (url.Parse quotes a URL up to
		// a "#" of its password) looks like a host with a port that is not
		// a number.
		if c := strings.LastIndex(auth, ":"); c >= 0 && !isPort(auth[c+1:]) {
			secrets = appendSecret(secrets, auth[c+1:])
			out += auth[:c+1] + redacted
			rest = rest[len(auth):]
		}
	}
	return out + redactParams(rest, &secrets), secrets
}

func indexOrLen(s, chars string) int {
	if i := strings.IndexAny(s, chars); i >= 0 {
		return i
	}
	return len(s)
}

// isPort reports whether s is empty or all digits.
func isPort(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// appendSecret adds a secret guessed textually, and its part before the
// first character that ends a userinfo for url.Parse ("/?# "), which is
// what url.Parse's error messages may quote.
func appendSecret(secrets []string, sec string) []string {
	secrets = append(secrets, sec)
	if i := strings.IndexAny(sec, "/?# "); i > 0 {
		secrets = append(secrets, sec[:i])
	}
	return secrets
}

// redactParams hides the values of credential-named key=value pairs.
func redactParams(s string, secrets *[]string) string {
	if !strings.Contains(s, "=") {
		return s
	}
	return secretParam.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretParam.FindStringSubmatch(m)
		if sub[3] == "" || sub[3] == redacted {
			return m
		}
		*secrets = append(*secrets, sub[3])
		return sub[1] + sub[2] + redacted
	})
}

// Redact hides credentials in free text (error messages, log lines): in
// every URL it contains, parseable or not (see RedactURL), and in
// credential-named key=value pairs. The secrets found, and those of the
// known URLs (typically the URL an error is about), are also hidden where
// they appear elsewhere in s, and so are double-quoted fragments of them
// (url.Parse quotes the piece it rejects, such as an escape of a password).
//
// Beside URLs and key=value pairs it hides the values of JSON members named
// like credentials ({"password":"..."}), Authorization headers and Bearer
// or Basic tokens, nkey=, jwt= and seed= values, JWTs and NATS nkey seeds
// wherever they appear, and the tokens of nats://, tls://, ws:// and
// wss:// URLs.
func Redact(s string, known ...string) string {
	if len(known) == 0 && !strings.ContainsAny(s, ":=") && !strings.Contains(s, "eyJ") && !strings.Contains(s, "earer") &&
		len(s) < 52 { // the shortest nkey seed bareToken finds
		return s
	}
	var secrets []string
	for _, k := range known {
		_, found := redactURL(k)
		secrets = append(secrets, found...)
	}
	s = urlInText.ReplaceAllStringFunc(s, func(m string) string {
		if len(m) > 1 && m[0] == '"' {
			r, found := redactURL(m[1 : len(m)-1])
			secrets = append(secrets, found...)
			return `"` + r + `"`
		}
		r, found := redactURL(m)
		secrets = append(secrets, found...)
		return r
	})
	s = redactParams(s, &secrets)
	s = jsonSecret.ReplaceAllStringFunc(s, func(m string) string {
		sub := jsonSecret.FindStringSubmatch(m)
		v := sub[2] + sub[3]
		if v == "" || v == redacted {
			return m
		}
		secrets = append(secrets, v)
		if sub[3] != "" {
			return sub[1] + redacted
		}
		return sub[1] + `"` + redacted + `"`
	})
	s = authHeader.ReplaceAllStringFunc(s, func(m string) string {
		sub := authHeader.FindStringSubmatch(m)
		prefix, tok := sub[1]+sub[3], sub[2]+sub[4]
		if tok == redacted {
			return m
		}
		secrets = append(secrets, tok)
		return prefix + redacted
	})
	s = bareToken.ReplaceAllString(s, redacted)
	return hideSecrets(s, secrets)
}

// hideSecrets replaces the secrets, their unescaped forms and quoted
// fragments of them wherever they remain in s.
func hideSecrets(s string, secrets []string) string {
	var all []string
	for _, sec := range secrets {
		if sec == "" || sec == redacted {
			continue
		}
		all = append(all, sec)
		if un, err := url.PathUnescape(sec); err == nil && un != sec {
			all = append(all, un)
		}
		if esc := url.QueryEscape(sec); esc != sec {
			all = append(all, esc)
		}
	}
	if len(all) == 0 {
		return s
	}
	s = quoted.ReplaceAllStringFunc(s, func(q string) string {
		inner := strings.Trim(q[1:len(q)-1], ":@/")
		if inner == "" || strings.Contains(inner, redacted) {
			return q
		}
		for _, sec := range all {
			if strings.Contains(sec, inner) || strings.Contains(inner, sec) {
				return `"` + redacted + `"`
			}
		}
		return q
	})
	for _, sec := range all {
		if len(sec) >= 3 { // shorter ones would hide unrelated text
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return s
}
