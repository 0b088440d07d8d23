"""The labels CSV of ``prepare_data.py --dicom`` (its rules: medimg/dicom.py's docstring): read by code/layout.py's
one labels-CSV reader (``read_manifest``) with this CSV's columns (``COLUMNS``: ``file`` anywhere, an optional
``split``, no ``patient_id``: patients come from the DICOM files), so a malformed row gets the same line as in a
channel's labels.csv; then the class (finding) names: from ``--label-dict`` or the labels themselves, compared as
train.py compares them (layout.class_matcher, ignoring case), each class named by its most frequent spelling."""
from medimg.container import layout
from medimg.prepare_data import PrepareError

FILE_COLUMN, SPLIT_COLUMN = "file", "split"
COLUMNS = layout.ManifestColumns(FILE_COLUMN, path_first=False, inside="the DICOM folder", split=SPLIT_COLUMN,
                                 patients_from="each file's DICOM PatientID tag (and are written as salted hashes)",
                                 show_paths=False)


class LabelTable:
    """A parsed labels CSV. ``files`` (relative paths), ``lines`` (CSV line numbers), ``kind`` "single" or "multi",
    ``classes`` (class or finding names, index order), ``targets`` (class index, or tuple of 0/1 per finding in
    ``classes`` order), ``splits`` (``train``/``val``/``test`` per row, or None without a split column),
    ``warnings`` (lines for the user: labels spelt more than one way)."""

    def __init__(self, path, kind, classes, files, lines, targets, splits):
        self.path, self.kind, self.classes = path, kind, classes
        self.files, self.lines, self.targets, self.splits = files, lines, targets, splits
        self.warnings = []


def read_labels(path, label_dict=None):
    """Parse the labels CSV at ``path`` (see the module docstring). ``label_dict``: class (finding) names in index
    order, from ``--label-dict``; they must name every label (the finding columns, in any order: the output
    follows the label dict's). Without it: the sorted label names, or the finding columns in CSV order.
    Raises PrepareError, naming the line (not the file, whose name may hold a patient id), for: no header or
    ``file`` column, a ``patient_id`` column, a ``label`` column beside finding columns, no label columns, an
    empty, absolute or climbing (``..``) path, a file listed twice, an empty label, a finding value other than 0/1,
    an empty or unknown split, too many fields, no rows."""
    try:
        manifest = layout.read_manifest(path, COLUMNS)
    except layout.LayoutError as exc:
        raise PrepareError(str(exc)) from exc
    single = manifest.kind == "single"
    names = [layout.LABEL_COLUMN] if single else manifest.findings
    raw_targets = manifest.labels if single else manifest.values
    classes, targets, spelt = _classes(path, manifest.kind, names, raw_targets, label_dict)
    table = LabelTable(path, manifest.kind, classes, manifest.images, manifest.lines, targets, manifest.splits)
    table.warnings = spelt
    return table


def _classes(path, kind, names, raw_targets, label_dict):
    """(classes, targets, warnings): labels (and finding columns) name classes by train.py's one rule
    (layout.class_matcher: ignoring case, in their folder form); without --label-dict a class is named by its
    most frequent spelling (layout.class_spellings), and other spellings are a warning."""
    written = raw_targets if kind == "single" else names
    if label_dict is not None:
        classes = list(label_dict)
    else:
        classes = layout.class_spellings(raw_targets) if kind == "single" else list(names)
    _check_names(path, classes)
    lookup = layout.class_matcher(classes)
    found = [lookup(name) for name in written]
    if kind == "single" and None in found:
        raise PrepareError(f"{path} has the label {written[found.index(None)]!r} that --label-dict {classes} does "
                           "not name; add it there or fix the CSV")
    if kind == "multi" and (None in found or sorted(found) != list(range(len(classes)))):
        raise PrepareError(f"{path} has the finding columns {names}, but --label-dict names {classes}; give one "
                           "name per finding column (in any order, compared ignoring case)")
    others = layout.other_spellings(written, classes, lookup)
    warnings_ = [f"{path} spells {'class' if kind == 'single' else 'finding'} "
                 f"{layout.describe_spellings(others, 'rows' if kind == 'single' else 'columns')}: the same "
                 f"{'class' if kind == 'single' else 'finding'}, as train.py compares names (ignoring case)"] \
        if others else []
    if kind == "single":
        return classes, found, warnings_
    order = [found.index(k) for k in range(len(classes))]
    return classes, [tuple(row[k] for k in order) for row in raw_targets], warnings_


def _check_names(path, classes):
    try:
        layout.parse_label_dict(layout.label_dict_json(classes), source=f"the class names of {path}", minimum=1)
    except layout.LayoutError as exc:
        raise PrepareError(str(exc)) from exc
