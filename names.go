package channels

import (
	"fmt"
	"reflect"

	"github.com/microchannels/channels/internal/suggest"
)

// MaxNameLength bounds channel, dead-letter queue and exchange names after
// the namespace prefix (Kafka's topic name limit).
const MaxNameLength = 249

// checkName validates a broker-side name: a channel, a dead-letter queue or
// exchange, or a namespace. The allowed names are those every adapter can
// use verbatim as a Redis stream key, an AMQP exchange and queue, a NATS
// subject and a Kafka topic: one or more tokens of ASCII letters, digits,
// "_" and "-", separated by single dots, at most MaxNameLength bytes. (NATS
// forbids empty tokens, spaces and the wildcards "*" and ">"; Kafka allows
// only [a-zA-Z0-9._-]; AMQP only letters, digits, "-", "_", "." and ":".)
func checkName(what, name string) error {
	if name == "" {
		return invalid("%s is empty", what)
	}
	if len(name) > MaxNameLength {
		return invalid("%s %q is longer than %d bytes", what, name, MaxNameLength)
	}
	prevDot := true // a name cannot start with a dot
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '.':
			if prevDot {
				return invalid("%s %q has an empty dot-separated token (NATS subjects forbid them)", what, name)
			}
			prevDot = true
			continue
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return invalid("%s %q: character %q is not allowed (use ASCII letters, digits, '_', '-' and '.' between tokens, so that the name works on every broker)", what, name, rune(c))
		}
		prevDot = false
	}
	if prevDot {
		return invalid("%s %q ends with a dot (NATS subjects forbid empty tokens)", what, name)
	}
	return nil
}

// checkNameOptions reports a name option given explicitly that matches no
// field of a schema declaring channels, a schema property that matches no
// field of a schema holding channels under other names, and a field of an
// injected type (SendFunc, broker.Adapter, TriggerFunc) whose name is a
// near miss of the name looked for, which would never be injected.
func (p *Plugin) checkNameOptions(st reflect.Type, declares bool) error {
	names := p.o.names()
	types := [4]reflect.Type{channelsType, sendType, adapterType, triggerType}
	fieldsOf := func(t reflect.Type) []string {
		var out []string
		for i := 0; i < st.NumField(); i++ {
			if f := st.Field(i); f.Type == t {
				out = append(out, f.Name)
			}
		}
		return out
	}
	// A field of an injected type whose name is a near miss of the name
	// looked for ("SendToChanel") would stay nil: report it whatever the
	// schema declares. Fields of that type with unrelated names are left
	// alone (another plugin, stacked with other names, fills them).
	for i := nameSendMethod; i <= nameTrigger; i++ {
		n := names[i]
		if _, ok := st.FieldByName(n.value); ok {
			continue
		}
		others := fieldsOf(types[i])
		if near := suggest.Closest(n.value, others); near != "" {
			return fmt.Errorf("%w: %s(%q) matches no field of %s; looked for a field %s of type %s; fields of that type: %v (did you mean %s? it would never be injected)",
				ErrInvalidOption, n.option, n.value, st, n.value, types[i], others, near)
		}
	}
	if _, ok := st.FieldByName(names[nameSchemaProperty].value); !ok {
		if others := fieldsOf(channelsType); len(others) > 0 {
			n := names[nameSchemaProperty]
			return fmt.Errorf("%w: %s(%q) matches no field of %s, which declares channels in %v; looked for a field %s of type %s",
				ErrInvalidOption, n.option, n.value, st, others, n.value, channelsType)
		}
		return nil
	}
	if !declares {
		return nil
	}
	for i := nameSendMethod; i <= nameTrigger; i++ {
		n := names[i]
		if !n.set {
			continue
		}
		if _, ok := st.FieldByName(n.value); ok {
			continue
		}
		msg := fmt.Sprintf("looked for a field %s of type %s", n.value, types[i])
		if others := fieldsOf(types[i]); len(others) > 0 {
			msg += fmt.Sprintf("; fields of that type: %v", others)
		}
		return fmt.Errorf("%w: %s(%q) matches no field of %s, which declares channels; %s",
			ErrInvalidOption, n.option, n.value, st, msg)
	}
	return nil
}

// QualifiedName is the broker-side name of a channel, dead-letter queue or
// exchange declared as name under namespace: "namespace.name", or name
// without a namespace, checked as New and Register check names
// (ErrInvalidOption). Tools that address what a plugin declared (package
// dlq, the channels command) build names with it.
func QualifiedName(namespace, name string) (string, error) {
	if namespace != "" {
		if err := checkName("namespace", namespace); err != nil {
			return "", err
		}
	}
	full := prefixed(namespace, name)
	if err := checkName("name", full); err != nil {
		return "", err
	}
	return full, nil
}
