#!/usr/bin/env python3
"""Build the two small BEIR-format retrieval evaluation sets shipped in benches/eval/.

  manpages    section-1 and section-8 manual pages of well-known Debian packages
              installed on the build machine. One document per page: the
              DESCRIPTION (+ OPTIONS) sections as plain text, with the NAME
              section removed. The query for a page is its NAME-line summary
              (the text after "\\-"), which the body does not contain as a section.
  debian-faq  the Debian FAQ (Debian package `debian-faq`, fetched with
              `apt-get download` and unpacked with `dpkg-deb -x`). Every section
              whose heading is a question gives one query (the heading) and one
              relevant document (the section's own answer text, heading removed,
              title = chapter name). Every other section is a distractor document.

Python standard library only. External tools: man, dpkg-query, apt-get, dpkg-deb.
Deterministic: inputs are sorted and the only sampling uses a fixed seed, so the
same installed package versions (and the same debian-faq .deb) give byte-identical
output. The manpages set depends on the versions installed on the building machine;
benches/eval/README.md records the ones used.

Usage:  python3 benches/eval/build_sets.py [--only manpages|debian-faq] [--out DIR]
"""

import argparse
import concurrent.futures
import gzip
import hashlib
import html.parser
import json
import os
import random
import re
import subprocess
import sys
import tempfile

SEED = 20240611
HERE = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------

_CHAR_MAP = {
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
    "\u2212": "-", "\u00ad": "", "\u2018": "'", "\u2019": "'", "\u201c": '"',
    "\u201d": '"', "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ",
    "\u200b": "", "\u2022": "*", "\u00b7": "*",
}
_CHAR_TABLE = str.maketrans(_CHAR_MAP)


def norm_ws(text):
    """Normalise typography, drop table rules (box drawing), collapse whitespace."""
    text = re.sub("[\u2500-\u257f]+", " ", text.translate(_CHAR_TABLE))
    return " ".join(text.split())


def write_set(out_dir, name, docs, queries, qrels):
    """docs: [(id, title, text)], queries: [(id, text)], qrels: [(qid, did)]."""
    d = os.path.join(out_dir, name)
    os.makedirs(os.path.join(d, "qrels"), exist_ok=True)
    with open(os.path.join(d, "corpus.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for did, title, text in docs:
            f.write(json.dumps({"_id": did, "title": title, "text": text}, ensure_ascii=False) + "\n")
    with open(os.path.join(d, "queries.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for qid, text in queries:
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with open(os.path.join(d, "qrels", "test.tsv"), "w", encoding="utf-8", newline="\n") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, did in qrels:
            f.write(f"{qid}\t{did}\t1\n")
    doc_ids = {x[0] for x in docs}
    assert len(doc_ids) == len(docs), "duplicate corpus ids"
    assert len({q[0] for q in queries}) == len(queries), "duplicate query ids"
    assert all(did in doc_ids for _, did in qrels), "qrel points at a missing document"
    for fn in ("corpus.jsonl", "queries.jsonl", os.path.join("qrels", "test.tsv")):
        p = os.path.join(d, fn)
        with open(p, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        print(f"wrote {os.path.relpath(p, out_dir)}  {os.path.getsize(p)} bytes  sha256 {digest}")
    print(f"{name}: {len(docs)} documents, {len(queries)} queries, {len(qrels)} qrels")


def pkg_versions(pkgs):
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"] + sorted(pkgs),
        capture_output=True, text=True).stdout
    vers = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2].startswith("ii"):
            vers[parts[0]] = parts[1]
    return vers


# ----------------------------------------------------------------------------
# set 1: manpages
# ----------------------------------------------------------------------------

# Well-known command-line packages. Whatever of these is installed is used.
# Deliberately absent: google-cloud-cli (16k generated gcloud pages), anything
# python*, llvm*, X11/GTK tools and -dev config scripts.
MAN_PACKAGES = sorted("""
adduser apt base-passwd bash bc binutils-common binutils-x86-64-linux-gnu bsdextrautils
bsdutils bzip2 coreutils curl dash debconf debianutils diffutils dirmngr dmsetup dpkg
dpkg-dev e2fsprogs ed fakeroot file findutils gawk gdb gettext gettext-base git-man
gnupg-utils gpg gpg-agent gpgconf gpgsm gpgv grep groff-base gzip hostname init-system-helpers
iproute2 jq kmod less libc-bin libcap2-bin login logsave lsb-release lsof lz4 make man-db
mawk mount ncurses-bin net-tools openssh-client openssl passwd patch procps psmisc sed
sensible-utils sqlite3 strace systemd systemd-sysv systemd-timesyncd sysvinit-utils tar time
tmux ucf udev unzip util-linux util-linux-extra wget xxd xz-utils zip zstd
""".split())

# Everyday commands that are kept ahead of a package's other pages when it is capped.
CORE_COMMANDS = set("""
cat chmod chown cp cut date dd df du echo env head ln ls mkdir mv rm sort tail tee touch tr
uniq wc xargs find grep sed tar gzip ps top kill free pgrep ip ss bridge ssh scp ssh-keygen
git git-add git-branch git-checkout git-clone git-commit git-diff git-log git-merge git-pull
git-push git-rebase git-reset git-status git-stash git-tag curl wget apt apt-get apt-cache
dpkg dpkg-query systemctl journalctl loginctl hostnamectl timedatectl mount umount lsblk
fdisk dmesg kill more su openssl-req openssl-x509 openssl-genrsa openssl-s_client useradd
passwd usermod groupadd readelf objdump nm strings mke2fs fsck e2fsck
""".split())

MAX_WORDS = 1500          # body truncation
MIN_BODY_WORDS = 80       # skip near-empty pages
MIN_SUMMARY_WORDS = 3
MAX_DOCS = 400            # at most this many pages: see cap_per_package()
MAN_DIR_RE = re.compile(r"^/usr/share/man/man([18])/([^/]+)\.([18][a-z]*)\.gz$")
BODY_SECTIONS = ("DESCRIPTION", "OPTIONS")


def dpkg_list(pkg):
    for cand in (f"/var/lib/dpkg/info/{pkg}.list", f"/var/lib/dpkg/info/{pkg}:amd64.list",
                 f"/var/lib/dpkg/info/{pkg}:all.list"):
        if os.path.exists(cand):
            with open(cand, encoding="utf-8") as f:
                return [l.rstrip("\n") for l in f]
    return []


def is_so_alias(path):
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            for line in f:
                s = line.strip()
                if not s or s.startswith(('.\\"', "'\\\"")):
                    continue
                return s.startswith(".so ")
    except OSError:
        return True
    return False


def render_man(path):
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", MANWIDTH="100",
               MANPAGER="cat", PAGER="cat")
    env.pop("MAN_KEEP_FORMATTING", None)
    r = subprocess.run(["man", "--nh", "--nj", "-l", path], capture_output=True, env=env,
                       timeout=120)
    text = r.stdout.decode("utf-8", errors="replace")
    # strip backspace overstrikes (bold: X\bX, underline: _\bX) should any remain
    text = re.sub(r".\x08", "", text)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # stray SGR escapes
    return text


def split_sections(rendered):
    """Rendered page -> ordered [(HEADING, [lines])]. Headings start in column 0."""
    lines = rendered.splitlines()
    # drop running header (first non-empty line) and footer (last non-empty line)
    nonempty = [i for i, l in enumerate(lines) if l.strip()]
    if len(nonempty) < 3:
        return []
    lines = lines[nonempty[0] + 1: nonempty[-1]]
    sections = []
    for line in lines:
        if line and not line[0].isspace():
            sections.append((line.strip(), []))
        elif sections:
            sections[-1][1].append(line)
    return sections


_NAME_ENTRY_RE = re.compile(r"^\s*[\w.@+\[-]+(?:,\s*[\w.@+\[-]+)*\s+-+\s+\S")


def parse_summary(name_lines):
    # A NAME section may hold several "name - summary" entries (hostname, bzip2):
    # keep the first entry only.
    entry = []
    for line in name_lines:
        if not line.strip():
            continue
        if entry and re.search(r"\s-+\s", " ".join(entry)) and _NAME_ENTRY_RE.match(line):
            break
        entry.append(line)
    s = norm_ws(" ".join(entry))
    m = re.search(r"\s-+\s", s) or re.search(r"\s-+", s)
    if not m:
        return None
    summ = s[m.end():].strip()
    summ = summ.rstrip(".").strip()
    return summ or None


def summary_key(s):
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def cap_per_package(pages, limit):
    """Keep at most `limit` pages, so that no package crowds out the others: find the
    largest per-package cap c with sum(min(n_pkg, c)) <= limit, then keep c pages of
    each larger package: its CORE_COMMANDS first, the rest drawn with a fixed seed."""
    by_pkg = {}
    for pg in pages:
        by_pkg.setdefault(pg["pkg"], []).append(pg)
    if len(pages) <= limit:
        return pages
    cap = 0
    while sum(min(len(v), cap + 1) for v in by_pkg.values()) <= limit:
        cap += 1
    rng = random.Random(SEED)
    out = []
    for pkg in sorted(by_pkg):
        v = sorted(by_pkg[pkg], key=lambda x: x["cmd"])
        if len(v) > cap:
            core = [pg for pg in v if pg["cmd"] in CORE_COMMANDS]
            rest = [pg for pg in v if pg["cmd"] not in CORE_COMMANDS]
            rng.shuffle(rest)
            v = (core + rest)[:cap]
        out.extend(v)
    print(f"manpages: {len(pages)} pages qualify; capped at {cap} pages per package", file=sys.stderr)
    return sorted(out, key=lambda x: x["cmd"])


def man_candidates():
    vers = pkg_versions(MAN_PACKAGES)
    seen_real = {}
    cands = []
    for pkg in sorted(vers):
        for p in sorted(dpkg_list(pkg)):
            m = MAN_DIR_RE.match(p)
            if not m or not os.path.exists(p):
                continue
            real = os.path.realpath(p)
            if not MAN_DIR_RE.match(real):
                continue
            if real in seen_real:
                continue
            seen_real[real] = pkg
            cands.append((pkg, real))
    cands = sorted(set(cands), key=lambda x: x[1])
    return vers, cands


def build_manpages(out_dir, workers):
    vers, cands = man_candidates()
    cands = [(pkg, p) for pkg, p in cands if not is_so_alias(p)]
    print(f"manpages: {len(cands)} candidate page files from {len(vers)} installed packages",
          file=sys.stderr)

    def work(item):
        pkg, path = item
        return pkg, path, render_man(path)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        rendered = list(ex.map(work, cands))

    pages = []
    skipped = {"no-name": 0, "short-summary": 0, "short-body": 0, "dup-summary": 0}
    for pkg, path, text in rendered:
        m = MAN_DIR_RE.match(path)
        cmd = m.group(2)
        secs = split_sections(text)
        name = [ls for h, ls in secs if h == "NAME"]
        summary = parse_summary(name[0]) if name else None
        if not summary:
            skipped["no-name"] += 1
            continue
        if len(summary.split()) < MIN_SUMMARY_WORDS:
            skipped["short-summary"] += 1
            continue
        body_parts = []
        for h, ls in secs:
            if h == "NAME":
                continue
            if h in BODY_SECTIONS:
                body_parts.append(norm_ws(" ".join(ls)))
        words = " ".join(body_parts).split()
        if len(words) < MIN_BODY_WORDS:
            skipped["short-body"] += 1
            continue
        body = " ".join(words[:MAX_WORDS])
        pages.append({"pkg": pkg, "cmd": cmd, "sec": m.group(3), "summary": summary,
                      "text": body})

    # drop every page whose summary is shared with another page (ambiguous queries);
    # exception: if exactly one page of such a group is a CORE_COMMANDS page (ls vs
    # dir/vdir), keep that one alone, which leaves its query unambiguous.
    groups = {}
    for pg in pages:
        groups.setdefault(summary_key(pg["summary"]), []).append(pg)
    kept = []
    for grp in groups.values():
        core = [pg for pg in grp if pg["cmd"] in CORE_COMMANDS]
        if len(grp) == 1:
            kept.extend(grp)
        elif len(core) == 1:
            kept.extend(core)
    skipped["dup-summary"] = len(pages) - len(kept)
    # two pages with the same command name (section 1 vs 8): keep the section-1 one
    by_cmd = {}
    for pg in sorted(kept, key=lambda x: (x["cmd"], x["sec"])):
        by_cmd.setdefault(pg["cmd"], pg)
    kept = sorted(by_cmd.values(), key=lambda x: x["cmd"])
    kept = cap_per_package(kept, MAX_DOCS)
    print(f"manpages: skipped {skipped}", file=sys.stderr)

    docs, queries, qrels = [], [], []
    for pg in kept:
        did = f"man:{pg['cmd']}"
        docs.append((did, pg["cmd"], pg["text"]))
        queries.append((f"q:{did}", pg["summary"]))
        qrels.append((f"q:{did}", did))
    write_set(out_dir, "manpages", docs, queries, qrels)
    used = sorted({pg["pkg"] for pg in kept})
    per_pkg = {p: sum(1 for pg in kept if pg["pkg"] == p) for p in used}
    print("manpages: packages used (name version pages):")
    for p in used:
        print(f"  {p} {vers[p]} {per_pkg[p]}")


# ----------------------------------------------------------------------------
# set 2: debian-faq
# ----------------------------------------------------------------------------

FAQ_PKG = "debian-faq"
FAQ_DIR = "usr/share/doc/debian/FAQ"
FAQ_MIN_OWN_WORDS = 25   # a question section's own text shorter than this gets its children's text
BLOCK_TAGS = {"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "pre", "br", "tr", "td", "th",
              "table", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6"}


class Section:
    def __init__(self, level, parent):
        self.level = level
        self.parent = parent
        self.anchor = None
        self.title = []
        self.text = []
        self.children = []
        self.footnotes = []      # ids of footnotes referenced from this section's own text


class FaqChapterParser(html.parser.HTMLParser):
    """DocBook-XSL chunked HTML -> tree of sections with their own text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Section(0, None)
        self.cur = self.root
        self.div_stack = []      # per open <div>: 'section', 'skip' or None
        self.skip_depth = 0      # inside navheader/navfooter/toc/titlepage
        self.in_heading = None   # heading tag name while collecting a title
        self.chapter_title = []
        self.first_anchor_pending = False
        self.footnote_text = {}  # footnote id -> [text]
        self.fn_target = None    # footnote id whose body is being collected
        self.skip_a = False      # inside a footnote marker link ("[1]")

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "div":
            if "footnote" in cls and a.get("id"):
                # footnote body: collected separately, appended to the section citing it
                self.fn_target = a["id"]
                self.footnote_text.setdefault(self.fn_target, [])
                self.div_stack.append("fn")
                return
            if any(c in ("navheader", "navfooter", "toc") for c in cls):
                self.div_stack.append("skip")
                self.skip_depth += 1
                return
            if "section" in cls or "chapter" in cls or "appendix" in cls:
                sec = Section(self.cur.level + 1, self.cur)
                self.cur.children.append(sec)
                self.cur = sec
                self.div_stack.append("section")
                self.first_anchor_pending = True
                return
            self.div_stack.append(None)
        if self.skip_depth:
            return
        if tag in ("h1", "h2", "h3", "h4", "h5") and "title" in cls and self.first_anchor_pending:
            self.in_heading = tag
            return
        if tag == "a" and self.in_heading and a.get("id") and self.cur.anchor is None:
            self.cur.anchor = a["id"]
        if tag == "a" and ("footnote" in cls or "para" in cls) and (a.get("href") or "").startswith("#"):
            # footnote marker "[n]" in the text, or the back-link "[n]" in the footnote body
            self.skip_a = True
            if "footnote" in cls and self.fn_target is None:
                self.cur.footnotes.append(a["href"][1:])
            return
        if tag in BLOCK_TAGS:
            self._emit(" ")

    def handle_endtag(self, tag):
        if tag == "div":
            kind = self.div_stack.pop() if self.div_stack else None
            if kind == "skip":
                self.skip_depth -= 1
            elif kind == "section":
                self.cur = self.cur.parent
            elif kind == "fn":
                self.fn_target = None
            return
        if self.skip_depth:
            return
        if tag == "a" and self.skip_a:
            self.skip_a = False
            return
        if self.in_heading and tag == self.in_heading:
            self.in_heading = None
            self.first_anchor_pending = False
            return
        if tag in BLOCK_TAGS:
            self._emit(" ")

    def handle_data(self, data):
        if self.skip_depth or self.skip_a:
            return
        if self.in_heading:
            self.cur.title.append(data)
        else:
            self._emit(data)

    def _emit(self, s):
        if self.fn_target is not None:
            self.footnote_text[self.fn_target].append(s)
        else:
            self.cur.text.append(s)

    def close(self):
        super().close()
        for sec in walk(self.root):
            for fid in sec.footnotes:
                sec.text.append(" " + "".join(self.footnote_text.get(fid, [])))


def fetch_faq(tmp):
    r = subprocess.run(["apt-get", "download", FAQ_PKG], cwd=tmp, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"apt-get download {FAQ_PKG} failed (run `apt-get update` first?):\n{r.stderr}")
    debs = sorted(f for f in os.listdir(tmp) if f.endswith(".deb"))
    deb = os.path.join(tmp, debs[-1])
    ver = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True,
                         text=True, check=True).stdout.strip()
    with open(deb, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    root = os.path.join(tmp, "x")
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    return ver, os.path.basename(deb), digest, os.path.join(root, FAQ_DIR)


def chapter_order(faq_dir):
    """Chapter files in the order the FAQ's index lists them."""
    with open(os.path.join(faq_dir, "index.en.html"), encoding="utf-8") as f:
        idx = f.read()
    order = []
    for href in re.findall(r'href="([a-z0-9-]+)\.en\.html"', idx):
        if href != "index" and href not in order:
            order.append(href)
    rest = sorted(f[:-len(".en.html")] for f in os.listdir(faq_dir)
                  if f.endswith(".en.html") and f != "index.en.html")
    return order + [c for c in rest if c not in order]


def walk(sec):
    yield sec
    for c in sec.children:
        yield from walk(c)


def section_text(sec):
    return norm_ws("".join(sec.text))


def subtree_text(sec):
    return " ".join(t for t in (section_text(s) for s in walk(sec)) if t)


def build_faq(out_dir, faq_dir=None):
    with tempfile.TemporaryDirectory() as tmp:
        if faq_dir is None:
            ver, debname, debsha, faq_dir = fetch_faq(tmp)
            print(f"debian-faq: using {debname} (version {ver}, sha256 {debsha})")
        return _build_faq(out_dir, faq_dir)


def _build_faq(out_dir, faq_dir):
    docs, queries, qrels = [], [], []
    stats = {"questions": 0, "distractors": 0, "empty": 0, "merged-children": 0}
    for chap in chapter_order(faq_dir):
        with open(os.path.join(faq_dir, chap + ".en.html"), encoding="utf-8") as f:
            p = FaqChapterParser()
            p.feed(f.read())
            p.close()
        chapters = p.root.children
        if not chapters:
            continue
        ch = chapters[0]
        ch_title = norm_ws("".join(ch.title))
        ch_title = re.sub(r"^(Chapter|Appendix)\s+[0-9A-Z]+\.\s*", "", ch_title)
        for sec in walk(ch):
            heading = norm_ws("".join(sec.title))
            num = re.match(r"^([0-9]+(?:\.[0-9]+)*)\.?\s+", heading)
            heading_text = heading[num.end():] if num else heading
            anchor = sec.anchor or (num.group(1) if num else "intro")
            did = f"faq:{chap}.{anchor}" if sec is not ch else f"faq:{chap}"
            is_question = sec is not ch and "?" in heading_text
            text = section_text(sec)
            if is_question and len(text.split()) < FAQ_MIN_OWN_WORDS and sec.children:
                # answer is spread over sub-sections: the question's document is the whole subtree
                text = subtree_text(sec)
                stats["merged-children"] += 1
            if not text:
                stats["empty"] += 1
                continue
            docs.append((did, ch_title, text))
            if is_question:
                stats["questions"] += 1
                queries.append((f"q:{did}", heading_text))
                qrels.append((f"q:{did}", did))
            else:
                stats["distractors"] += 1
    print(f"debian-faq: {stats}", file=sys.stderr)
    write_set(out_dir, "debian-faq", docs, queries, qrels)


# ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["manpages", "debian-faq"])
    ap.add_argument("--out", default=HERE, help="output directory (default: this script's folder)")
    ap.add_argument("--faq-dir", help="use an already unpacked FAQ html directory instead of apt-get download")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.only in (None, "manpages"):
        build_manpages(args.out, args.workers)
    if args.only in (None, "debian-faq"):
        build_faq(args.out, args.faq_dir)


if __name__ == "__main__":
    main()
