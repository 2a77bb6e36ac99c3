package broker

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"

	"github.com/microchannels/channels/internal/suggest"
)

// Factory builds an adapter. u is nil when the adapter is named by its type
// name alone ("Redis"); the adapter then uses its defaults.
type Factory func(u *url.URL) (Adapter, error)

var registry = struct {
	sync.RWMutex
	byName   map[string]Factory
	byScheme map[string]Factory
}{byName: map[string]Factory{}, byScheme: map[string]Factory{}}

// Register makes an adapter resolvable by type name (case-insensitive) and
// by URL schemes. Adapter packages call it from init, database/sql style, so
// importing github.com/microchannels/channels/redis makes "redis://" work.
// Registering a name or scheme twice panics, as database/sql.Register does:
// it is a programming error found at init.
func Register(name string, schemes []string, f Factory) {
	registry.Lock()
	defer registry.Unlock()
	key := strings.ToLower(name)
	if _, dup := registry.byName[key]; dup {
		panic("channels: Register called twice for adapter " + name)
	}
	registry.byName[key] = f
	for _, s := range schemes {
		s = strings.ToLower(s)
		if _, dup := registry.byScheme[s]; dup {
			panic("channels: Register called twice for scheme " + s)
		}
		registry.byScheme[s] = f
	}
}

// Registered lists the registered type names and schemes.
func Registered() (names, schemes []string) {
	registry.RLock()
	defer registry.RUnlock()
	for n := range registry.byName {
		names = append(names, n)
	}
	for s := range registry.byScheme {
		schemes = append(schemes, s)
	}
	sort.Strings(names)
	sort.Strings(schemes)
	return names, schemes
}

// Resolve builds an adapter from a URL ("redis://host:6379") or a type name
// ("Redis", "memory").
func Resolve(s string) (Adapter, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: adapter is empty", ErrUnknownAdapter)
	}
	registry.RLock()
	if !strings.Contains(s, "://") {
		f, ok := registry.byName[strings.ToLower(s)]
		registry.RUnlock()
		if !ok {
			return nil, fmt.Errorf("%w: no adapter named %q%s (registered: %s); import its package, e.g. _ \"github.com/microchannels/channels/redis\"",
				ErrUnknownAdapter, s, didYouMean(strings.ToLower(s), names()), strings.Join(names(), ", "))
		}
		return f(nil)
	}
	u, err := url.Parse(s)
	if err != nil {
		registry.RUnlock()
		return nil, InvalidURLError(ErrUnknownAdapter, "adapter", s, err)
	}
	f, ok := registry.byScheme[strings.ToLower(u.Scheme)]
	var known []string
	if !ok {
		known = schemes()
	}
	registry.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: no adapter for URL scheme %q%s (registered: %s); import its package, e.g. _ \"github.com/microchannels/channels/redis\"",
			ErrUnknownAdapter, u.Scheme, didYouMean(strings.ToLower(u.Scheme), known), strings.Join(known, ", "))
	}
	return f(u)
}

// didYouMean suggests the known name closest to a mistyped one
// (`; did you mean "kafka"?`), or nothing when none is close.
func didYouMean(name string, known []string) string {
	if near := suggest.Closest(name, known); near != "" {
		return fmt.Sprintf("; did you mean %q?", near)
	}
	return ""
}

func schemes() []string {
	out := make([]string, 0, len(registry.byScheme))
	for s := range registry.byScheme {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func names() []string {
	out := make([]string, 0, len(registry.byName))
	for n := range registry.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// InvalidURLError describes a URL that url.Parse (or a driver's parser)
// rejected, without showing any credential of it: the URL is redacted
// (RedactURL); the reason of a *url.Error loses the fragments it quotes
// (url.Parse quotes the rejected piece, which may be part of a password),
// any other reason goes through Redact. The result wraps sentinel (for
// example ErrInvalidOption), not err, whose text may hold the raw URL.
func InvalidURLError(sentinel error, what, raw string, err error) error {
	reason := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		reason = quoted.ReplaceAllString(ue.Err.Error(), "")
		reason = strings.Join(strings.Fields(reason), " ")
	}
	return fmt.Errorf("%w: invalid %s URL %q: %s", sentinel, what, RedactURL(raw), Redact(reason, raw))
}
