"""``multitask-mx make-list PREFIX ROOT``: .lst files from a folder of class folders, like ``im2rec.py --list``.

``ROOT/<class>/*.jpg`` gives one label column; ``ROOT/<class1>/<class2>/*.jpg``
gives two. Images are split per class (stratified) into ``PREFIX_train.lst``,
``PREFIX_val.lst`` and ``PREFIX_test.lst``; class names go to ``PREFIX_classes*.txt``
in label order, ready for ``train --classes``. Paths in the lists are relative to ROOT.
"""
import collections
import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor

from .. import _runtime
from ..atomic import atomic_write_bytes
from ..data.image_files import IMAGE_EXTENSIONS, add_check_images_flag, find_image_files
from ..errors import UserInputError, shorten
from ..logs import setup_logging
from ..flagtypes import non_negative_int

_logger = logging.getLogger(__name__)


SPLIT_NAMES = {1: [""], 2: ["train", "val"], 3: ["train", "val", "test"]}


def add_arguments(parser):
    """make-list flags, in im2rec's order: PREFIX ROOT."""
    parser.add_argument("prefix", metavar="PREFIX", help="output prefix: PREFIX_train.lst, PREFIX_val.lst, "
                        "PREFIX_test.lst and PREFIX_classes*.txt")
    parser.add_argument("root", metavar="ROOT", help="folder of class folders: ROOT/<class>/*.jpg, or "
                        "ROOT/<class1>/<class2>/*.jpg for two label columns")
    group = parser.add_argument_group("list")
    group.add_argument("--split", default="0.7,0.2,0.1",
                       help="train,val,test fractions summing to 1 (stratified per class); '0.8,0.2' writes "
                            "no test list, '1' writes PREFIX.lst")
    group.add_argument("--seed", type=non_negative_int, default=0, help="random seed of the split and of --shuffle")
    group.add_argument("--shuffle", action="store_true",
                       help="shuffle the lines of each list (default: ordered by class, then path)")
    group.add_argument("--recursive", action="store_true",
                       help="also take images in sub-folders of a class folder (they get that folder's class)")
    group.add_argument("--levels", choices=["auto", "1", "2"], default="auto",
                       help="class folder levels: 2 gives two label columns; auto picks 2 when no class folder "
                            "holds images itself but all hold sub-folders (and not --recursive)")
    group.add_argument("--exts", default=",".join(IMAGE_EXTENSIONS),
                       help="image extensions to list, comma-separated (case-insensitive)")
    add_check_images_flag(group, "none", "bad images are reported and left out of the lists")
    group.add_argument("--quiet", action="store_true", help="warnings only on stderr")


def parse_split(text):
    """'0.7,0.2,0.1' -> [0.7, 0.2, 0.1], checked: 1 to 3 fractions, none negative, summing to 1."""
    try:
        ratios = [float(v) for v in text.split(",")]
    except ValueError:
        ratios = []
    if not 1 <= len(ratios) <= 3 or min(ratios) < 0 or ratios[0] <= 0:
        raise UserInputError("--split %r: give train,val,test fractions such as 0.7,0.2,0.1 (1 to 3 numbers, "
                             "the first above 0)." % text)
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise UserInputError("--split %s sums to %g, not 1. The fractions are of all images, e.g. 0.7,0.2,0.1."
                             % (text, sum(ratios)))
    return ratios


def subfolders(folder):
    """Visible sub-folders of ``folder``, sorted (their order gives the class indices)."""
    return sorted(d for d in os.listdir(folder) if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def detect_levels(root, classes, exts, recursive):
    """2 when every class folder holds only sub-folders (and not --recursive), else 1."""
    if recursive:
        return 1
    for name in classes:
        folder = os.path.join(root, name)
        if find_image_files(folder, exts, recursive=False) or not subfolders(folder):
            return 1
    return 2


def _images_of(root, parts, exts, recursive):
    folder = os.path.join(root, *parts)
    found = find_image_files(folder, exts, recursive)
    if not found:
        raise UserInputError("class folder %s has no images (looked for %s%s). Add images or remove the folder."
                             % (folder, " ".join(exts), " in sub-folders too" if recursive else
                                "; pass --recursive to take images in its sub-folders"))
    return [os.path.relpath(path, root).replace(os.sep, "/") for path in found]


def scan_tree(root, exts, recursive=False, levels="auto"):
    """([(relative path, labels)], [class names per label column]) of the images under ``root``."""
    if not os.path.isdir(root):
        raise UserInputError("ROOT %s is not a folder. Give the folder that holds one folder per class." % root)
    top = subfolders(root)
    if not top:
        raise UserInputError("ROOT %s has no class folders: expected ROOT/<class>/*.jpg "
                             "(or ROOT/<class1>/<class2>/*.jpg for two label columns)." % root)
    loose = find_image_files(root, exts, recursive=False)
    if loose:
        _logger.warning("%d image(s) directly in %s are in no class folder and are not listed", len(loose), root)
    levels = detect_levels(root, top, exts, recursive) if levels == "auto" else int(levels)
    if levels == 1:
        items = [(rel, (c,)) for c, name in enumerate(top) for rel in _images_of(root, [name], exts, recursive)]
        return items, [top]
    inner = {name: subfolders(os.path.join(root, name)) for name in top}
    second = sorted(set().union(*inner.values()))
    items = []
    for c, name in enumerate(top):
        if not inner[name]:
            raise UserInputError("class folder %s has no sub-folders, but two levels need ROOT/<class1>/<class2>/"
                                 "images. Use --levels 1 for one label column." % os.path.join(root, name))
        skipped = find_image_files(os.path.join(root, name), exts, recursive=False)
        if skipped:
            _logger.warning("%d image(s) directly in %s are in no second-level folder and are not listed",
                            len(skipped), os.path.join(root, name))
        for sub in inner[name]:
            items += [(rel, (c, second.index(sub))) for rel in _images_of(root, [name, sub], exts, recursive)]
    return items, [top, second]


def _unlistable(name):
    """Why ``name`` (a path or a part of one) cannot be written in a .lst line or a classes file, or None."""
    for char, what in (("\t", "a tab"), ("\n", "a line break"), ("\r", "a carriage return")):
        if char in name:
            return "holds %s, which separates the columns or lines of a .lst file" % what
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (a .lst file is UTF-8 text)"
    return None


def check_listable(root, items, class_names):
    """Refuse, naming the folder or file, a name that the .lst format (tab-separated lines) cannot hold."""
    for column in class_names:
        for name in column:
            reason = _unlistable(name)
            if reason:
                raise UserInputError("class folder %r %s. Rename the folder (e.g. replace tabs and line breaks "
                                     "with spaces); nothing was written." % (shorten(name), reason))
    for rel, _ in items:
        reason = _unlistable(rel) or ("starts or ends with a space, which the .lst reader strips"
                                      if rel != rel.strip() else None)
        if reason:
            raise UserInputError("image %r (under %s) %s. Rename it; nothing was written."
                                 % (shorten(rel), shorten(root), reason))


def find_unreadable(root, items, threads, full=True):
    """{relative path: reason} for images that cannot be decoded (``full``) or whose file looks broken."""
    from ..data.images import check_image_file, read_checked_image  # imports mxnet: only when checking

    def problem(item):  # OpenCV releases the GIL: threads decode in parallel
        path = os.path.join(root, item[0])
        return read_checked_image(path)[1] if full else check_image_file(path)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        reasons = list(pool.map(problem, items))
    return {item[0]: reason for item, reason in zip(items, reasons) if reason}


def stratified_split(items, ratios, seed):
    """Split ``items`` into len(ratios) parts, each class (label tuple) cut by the same fractions."""
    rng = random.Random(seed)
    groups = collections.defaultdict(list)
    for index, item in enumerate(items):
        groups[item[1]].append((index,) + item)
    parts = [[] for _ in ratios]
    short = []
    for labels in sorted(groups):
        group = groups[labels]
        rng.shuffle(group)
        cuts = [0] + [int(round(len(group) * sum(ratios[:k + 1]))) for k in range(len(ratios))]
        cuts[-1] = len(group)
        for k in range(len(ratios)):
            parts[k] += group[cuts[k]:cuts[k + 1]]
            if ratios[k] > 0 and cuts[k] == cuts[k + 1]:
                short.append((labels, len(group), k))
    return parts, short


def lst_text(rows, shuffle, rng):
    """Lines 'index<TAB>label...<TAB>path' in im2rec's format."""
    rows = sorted(rows, key=lambda r: (r[2], r[1]))
    if shuffle:
        rng.shuffle(rows)
    return "".join("%d\t%s\t%s\n" % (index, "\t".join("%f" % v for v in labels), rel)
                   for index, rel, labels in rows)


def class_file_names(prefix, columns):
    """PREFIX_classes.txt for one label column, PREFIX_classes1.txt, PREFIX_classes2.txt for two."""
    if columns == 1:
        return ["%s_classes.txt" % prefix]
    return ["%s_classes%d.txt" % (prefix, c + 1) for c in range(columns)]


def _warn_short_classes(short, class_names, names):
    for labels, count, part in short:
        _logger.warning("class %s has %d image(s): none goes to the %s list",
                        "/".join(class_names[c][v] for c, v in enumerate(labels)), count, names[part])


def run(args):
    """Entry point of ``multitask-mx make-list``."""
    setup_logging(None, quiet=args.quiet)
    ratios = parse_split(args.split)
    exts = [e if e.startswith(".") else "." + e for e in (x.strip() for x in args.exts.split(",")) if e]
    items, class_names = scan_tree(args.root, exts, args.recursive, args.levels)
    check_listable(args.root, items, class_names)
    if args.check_images != "none":
        bad = find_unreadable(args.root, items, _runtime.usable_cores(), full=args.check_images == "full")
        for rel, reason in sorted(bad.items()):
            _logger.warning("not listed: %s %s", os.path.join(args.root, rel), reason)
        items = [item for item in items if item[0] not in bad]
        print("checked %d image(s): %d unreadable, left out" % (len(items) + len(bad), len(bad)))
    names = SPLIT_NAMES[len(ratios)]
    parts, short = stratified_split(items, ratios, args.seed)
    _warn_short_classes(short, class_names, names)
    os.makedirs(os.path.dirname(os.path.abspath(args.prefix)), exist_ok=True)
    rng = random.Random(args.seed)
    print("%s: %d image(s), %s" % (args.root, len(items), ", ".join(
        "%d class(es) in label column %d" % (len(n), c + 1) for c, n in enumerate(class_names))))
    for name, rows, ratio in zip(names, parts, ratios):
        if ratio == 0:
            continue
        path = "%s_%s.lst" % (args.prefix, name) if name else "%s.lst" % args.prefix
        atomic_write_bytes(path, lst_text(rows, args.shuffle, rng).encode("utf-8"))
        print("wrote %s (%d image(s))" % (path, len(rows)))
    for path, column in zip(class_file_names(args.prefix, len(class_names)), class_names):
        atomic_write_bytes(path, "".join(n + "\n" for n in column).encode("utf-8"))
        print("wrote %s" % path)
    return 0
