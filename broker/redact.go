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
	secretParam = regexp.MustCompile(`(?i)(^|[^A-Za-z0-9_.\-])((?:[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|credential)[A-Za-z0-9_.\-]*|pass|auth|api[_\-]?key|access[_\-]?key|private[_\-]?key|sasl[_\-]?pass)=)([^&;\s"',)]*)`)
	// quoted finds double-quoted fragments, which error messages use to
	// quote a piece of their input.
	quoted = regexp.MustCompile(`"[^"]*"`)
)

// tokenSchemes carry a secret in a userinfo without password
// (nats://TOKEN@host).
var tokenSchemes = map[string]bool{"nats": true, "tls": true}

// RedactURL returns raw with its credentials replaced by "xxxxx": the
// userinfo password (the whole userinfo for the token schemes nats:// and
// tls://) and query parameters that name a credential (password=, pass=,
// token=, secret=, api_key=...). It works on strings url.Parse rejects too,
// textually: everything between "://" and the last "@" is the userinfo.
func RedactURL(raw string) string {
	out, _ := redactURL(raw)
	return out
}

// redactURL returns the redacted URL and the secrets it hid.
func redactURL(raw string) (string, []string) {
	var secrets []string
	i := strings.Index(raw, "://")
	if i < 0 {
		return redactParams(raw, &secrets), secrets
	}
	scheme := strings.ToLower(raw[:i])
	if u, err := url.Parse(raw); err == nil && u.Scheme != "" && u.Opaque == "" {
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
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		userinfo := rest[:at]
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
func Redact(s string, known ...string) string {
	if len(known) == 0 && !strings.Contains(s, "://") && !strings.Contains(s, "=") {
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
