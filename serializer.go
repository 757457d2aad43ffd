package kisflow

import (
	"fmt"
	"log/slog"
	"reflect"
)

// rowTyped is a Handler that knows the struct type of its rows.
type rowTyped interface {
	rowType() reflect.Type
}

func (h ptrHandler[T]) rowType() reflect.Type { return reflect.TypeFor[T]() }
func (h valHandler[T]) rowType() reflect.Type { return reflect.TypeFor[T]() }
func (h *reflectHandler) rowType() reflect.Type {
	if h.kind == reflectPtr || h.kind == reflectVal {
		return h.base
	}
	return nil
}

var (
	reflectTypeType  = reflect.TypeFor[reflect.Type]()
	reflectValueType = reflect.TypeFor[reflect.Value]()
)

// checkSerializer refuses a function whose row type carries KisFlow's
// per-type serializer (kis.Serialize: methods UnMarshal(KisRowArr,
// reflect.Type) (reflect.Value, error) and Marshal(any) (KisRowArr,
// error)): here rows convert through the engine's codec, and such methods
// would be ignored silently. Methods with those names but other shapes get
// a logged warning.
//
// As in the original (kis.isSerialize), only the row type's own method set
// counts, the methods with value receivers: the original's
// serialize.DefaultSerialize has pointer receivers, so a row type embedding
// it (every original example does) never was a per-type serializer there,
// and is accepted here without a word.
func checkSerializer(h Handler) error {
	rt, ok := h.(rowTyped)
	if !ok || rt.rowType() == nil {
		return nil
	}
	t := rt.rowType()
	un, okUn := t.MethodByName("UnMarshal")
	ma, okMa := t.MethodByName("Marshal")
	if !okUn || !okMa {
		return nil
	}
	if isKisUnMarshal(un.Type) && isKisMarshal(ma.Type) {
		return fmt.Errorf("row type %s has UnMarshal and Marshal methods (KisFlow's kis.Serialize, a per-type serializer): "+
			"per-type serializers are not supported, rows convert through the engine's codec. Decode such rows in the function "+
			"(take []any or string rows), or give the engine a Codec with kisflow.WithCodec (see docs/migrating-from-kisflow.md)", t)
	}
	slog.Default().Warn("row type has methods named UnMarshal and Marshal: if they are a KisFlow per-type serializer (kis.Serialize), "+
		"they are not used; rows convert through the engine's codec (kisflow.WithCodec)", "type", t.String())
	return nil
}

// isEmptyIface reports whether t is interface{} (any).
func isEmptyIface(t reflect.Type) bool { return t.Kind() == reflect.Interface && t.NumMethod() == 0 }

// isRowArr reports whether t is a slice of any (KisFlow's KisRowArr).
func isRowArr(t reflect.Type) bool { return t.Kind() == reflect.Slice && isEmptyIface(t.Elem()) }

// isKisUnMarshal: func(recv, KisRowArr, reflect.Type) (reflect.Value, error).
func isKisUnMarshal(m reflect.Type) bool {
	return m.NumIn() == 3 && isRowArr(m.In(1)) && m.In(2) == reflectTypeType &&
		m.NumOut() == 2 && m.Out(0) == reflectValueType && m.Out(1) == errorType
}

// isKisMarshal: func(recv, any) (KisRowArr, error).
func isKisMarshal(m reflect.Type) bool {
	return m.NumIn() == 2 && isEmptyIface(m.In(1)) &&
		m.NumOut() == 2 && isRowArr(m.Out(0)) && m.Out(1) == errorType
}
