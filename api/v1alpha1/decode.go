package v1alpha1

import (
	"fmt"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/rebalancer-dev/rebalancer/internal/strictyaml"
)

// MaxFileSize bounds every file rebalancer reads from a repository.
const MaxFileSize = 1 << 20

// FileError is one problem in one file, printed as `file:line: field: message`.
type FileError struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func (e FileError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Message)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Message)
}

// ErrorList is every problem found in one or more files. It is an error so callers
// can return it whole; errors.As finds it.
type ErrorList []FileError

func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Document is a decoded file: its object and where each field was written.
type Document struct {
	File string
	// Object is *RebalancePolicy, *RebalancePlan or *RebalanceStatus, or nil when
	// the kind cannot be told. Use it only when decoding returned no errors.
	Object any
	pos    *strictyaml.Positions
}

// Line is the line where a field path such as spec.policy was written, or of its
// nearest written ancestor.
func (d *Document) Line(fieldPath string) int { return d.pos.Line(fieldPath) }

// Decode reads one rebalancer file. expectKind, when not empty, is the kind the
// file's location implies (a file under plans/ must be a RebalancePlan).
func Decode(file string, data []byte, expectKind string) (*Document, ErrorList) {
	obj, pos, errs := decode(file, data, expectKind)
	return &Document{File: file, Object: obj, pos: pos}, errs
}

func decode(file string, data []byte, expectKind string) (any, *strictyaml.Positions, ErrorList) {
	fail := func(line int, fieldPath, format string, args ...any) (any, *strictyaml.Positions, ErrorList) {
		return nil, nil, ErrorList{{File: file, Line: line, Field: fieldPath, Message: fmt.Sprintf(format, args...)}}
	}
	if len(data) > MaxFileSize {
		return fail(1, "", "the file is %d bytes: rebalancer files are limited to %d bytes (1 MiB)", len(data), MaxFileSize)
	}
	kind, kindLine := peekKind(data)
	var errs ErrorList
	if expectKind != "" && kind != "" && kind != expectKind && knownKind(kind) {
		errs = append(errs, FileError{File: file, Line: kindLine, Field: "kind",
			Message: fmt.Sprintf("a %s does not belong in %s/: expected kind %s", kind, DirFor(expectKind), expectKind)})
	}
	if !knownKind(kind) {
		if expectKind == "" {
			// Let a syntax error or an empty file speak for itself before guessing at kind.
			var probe struct{}
			if _, serrs := strictyaml.Decode(data, &probe); len(serrs) > 0 && serrs[0].Field == "" {
				return fail(serrs[0].Line, "", "%s", serrs[0].Message)
			}
			if kind == "" {
				return fail(1, "kind", "Required value: one of %s, %s, %s", KindPolicy, KindPlan, KindStatus)
			}
			return fail(kindLine, "kind", "Unsupported value: %q: supported values: %q, %q, %q", kind, KindPolicy, KindPlan, KindStatus)
		}
		kind = expectKind
	}
	var obj any
	var validate func() field.ErrorList
	switch kind {
	case KindPolicy:
		p := NewPolicy("")
		p.TypeMeta = TypeMeta{}
		obj, validate = p, p.Validate
	case KindPlan:
		p := &RebalancePlan{}
		obj, validate = p, p.Validate
	case KindStatus:
		s := &RebalanceStatus{}
		obj, validate = s, s.Validate
	}
	pos, derrs := strictyaml.Decode(data, obj)
	for _, e := range derrs {
		errs = append(errs, FileError{File: file, Line: e.Line, Field: e.Field, Message: e.Message})
	}
	if len(derrs) > 0 && derrs[0].Field == "" {
		return obj, pos, errs // the document itself is unreadable: nothing more to say
	}
	decodeFailed := map[string]bool{}
	for _, e := range derrs {
		decodeFailed[e.Field] = true
	}
	for _, fe := range validate() {
		if decodeFailed[fe.Field] {
			continue // already reported as a decode error; a second line would only confuse
		}
		errs = append(errs, FileError{File: file, Line: pos.Line(fe.Field), Field: fe.Field, Message: fe.ErrorBody()})
	}
	if file != "" && (kind == KindPlan || kind == KindStatus) {
		name := nameOf(obj)
		base := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(file), ".yaml"), ".yml")
		if name != "" && name != base {
			errs = append(errs, FileError{File: file, Line: pos.Line("metadata.name"), Field: "metadata.name",
				Message: fmt.Sprintf("Invalid value: %q: must equal the file name %q (files are named after the plan ID)", name, base)})
		}
	}
	return obj, pos, errs
}

// DecodePolicy reads and validates a policy file.
func DecodePolicy(file string, data []byte) (*RebalancePolicy, error) {
	doc, errs := Decode(file, data, KindPolicy)
	if len(errs) > 0 {
		return nil, errs
	}
	return doc.Object.(*RebalancePolicy), nil
}

// DecodePlan reads and validates a plan file.
func DecodePlan(file string, data []byte) (*RebalancePlan, error) {
	doc, errs := Decode(file, data, KindPlan)
	if len(errs) > 0 {
		return nil, errs
	}
	return doc.Object.(*RebalancePlan), nil
}

// DecodeStatus reads and validates a status file.
func DecodeStatus(file string, data []byte) (*RebalanceStatus, error) {
	doc, errs := Decode(file, data, KindStatus)
	if len(errs) > 0 {
		return nil, errs
	}
	return doc.Object.(*RebalanceStatus), nil
}

// Marshal renders a policy, plan or status as YAML in field order.
func Marshal(obj any) ([]byte, error) {
	return strictyaml.Marshal(obj)
}

func nameOf(obj any) string {
	switch o := obj.(type) {
	case *RebalancePolicy:
		return o.Metadata.Name
	case *RebalancePlan:
		return o.Metadata.Name
	case *RebalanceStatus:
		return o.Metadata.Name
	}
	return ""
}

func knownKind(k string) bool { return k == KindPolicy || k == KindPlan || k == KindStatus }

// DirFor is the directory under the rebalancer root that holds files of a kind.
func DirFor(kind string) string {
	switch kind {
	case KindPolicy:
		return "policies"
	case KindPlan:
		return "plans"
	}
	return "status"
}

// peekKind reads the top-level kind, forgivingly: the strict decode that follows
// reports whatever else is wrong.
func peekKind(data []byte) (string, int) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return "", 0
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return "", 0
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "kind" && root.Content[i+1].Kind == yaml.ScalarNode {
			return root.Content[i+1].Value, root.Content[i].Line
		}
	}
	return "", 0
}
