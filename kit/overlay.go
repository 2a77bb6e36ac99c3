package kit

import "reflect"

// Overlay returns base with every field that over sets laid on top: the
// merge of adapter-wide options with a channel's or a send's own. A field
// of over is set when it is not its zero value; then
//
//   - a nested struct of exported fields is overlaid field by field (one
//     with unexported fields, such as a time.Time, is a value);
//   - a map adds its keys to base's (over's value wins), in a new map;
//   - a bool can only turn base's on (an option's bool means "on");
//   - anything else (numbers, strings, durations, non-nil slices,
//     pointers and funcs) replaces base's: a field whose zero value is
//     meaningful is a pointer (nil: not set).
//
// T is a struct; its unexported fields keep base's value.
func Overlay[T any](base, over T) T {
	b := reflect.ValueOf(&base).Elem()
	overlay(b, reflect.ValueOf(over))
	return base
}

func overlay(base, over reflect.Value) {
	for i := range base.NumField() {
		if !base.Type().Field(i).IsExported() {
			continue
		}
		b, o := base.Field(i), over.Field(i)
		if o.IsZero() {
			continue
		}
		switch {
		case o.Kind() == reflect.Struct && allExported(o.Type()):
			overlay(b, o)
		case o.Kind() == reflect.Map:
			m := reflect.MakeMapWithSize(o.Type(), b.Len()+o.Len())
			for _, src := range []reflect.Value{b, o} {
				it := src.MapRange()
				for it.Next() {
					m.SetMapIndex(it.Key(), it.Value())
				}
			}
			b.Set(m)
		default:
			b.Set(o)
		}
	}
}

// allExported reports whether every field of the struct type t is exported.
func allExported(t reflect.Type) bool {
	for i := range t.NumField() {
		if !t.Field(i).IsExported() {
			return false
		}
	}
	return true
}
