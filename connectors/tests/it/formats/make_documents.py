"""Writes the test documents with the reference libraries of each format:
fpdf2 (PDF), python-docx (DOCX) and EbookLib (EPUB). Usage: make_documents.py DIR"""

import sys
from pathlib import Path

from docx import Document
from ebooklib import epub
from fpdf import FPDF

out = Path(sys.argv[1])

pdf = FPDF()
pdf.set_title("Harbours at Dawn")
pdf.set_author("Ada")
pdf.set_font("Helvetica", size=12)
pdf.add_page()
pdf.multi_cell(0, 8, "The first page speaks of lighthouses along the northern coast.", new_x="LMARGIN", new_y="NEXT")
pdf.multi_cell(0, 8, "Their keepers wrote letters every winter.", new_x="LMARGIN", new_y="NEXT")
pdf.add_page()
pdf.multi_cell(0, 8, "The second page turns to orchards and the apple harvest.", new_x="LMARGIN", new_y="NEXT")
pdf.output(str(out / "harbours.pdf"))

doc = Document()
doc.core_properties.title = "Notes on Rivers"
doc.add_heading("Notes on Rivers", level=1)
doc.add_paragraph("Rivers flood each spring and carry silt to the delta.")
doc.add_heading("Bridges", level=2)
doc.add_paragraph("Stone bridges outlast wooden ones.", style="List Bullet")
doc.add_paragraph("Iron bridges rust near the sea.", style="List Bullet")
table = doc.add_table(rows=2, cols=2)
table.cell(0, 0).text = "river"
table.cell(0, 1).text = "length"
table.cell(1, 0).text = "Danube"
table.cell(1, 1).text = "2850 km"
doc.save(str(out / "rivers.docx"))

book = epub.EpubBook()
book.set_identifier("twinflow-test-book")
book.set_title("A Book of Canals")
book.set_language("en")
book.add_author("Ada")
one = epub.EpubHtml(title="Locks", file_name="chapter 1.xhtml", lang="en")
one.content = (
    "<html><body><h1>Locks</h1><p>A lock lifts a barge between two levels of water.</p>"
    "<ul><li>upper gate</li><li>lower gate</li></ul></body></html>"
)
two = epub.EpubHtml(title="Tolls", file_name="chapter2.xhtml", lang="en")
two.content = (
    "<html><body><h2>Tolls</h2><p>Every barge paid a toll by weight.</p>"
    "<pre><code>toll = weight * rate\nif weight &gt; 40:\n    toll += surcharge</code></pre></body></html>"
)
book.add_item(one)
book.add_item(two)
book.toc = (one, two)
book.add_item(epub.EpubNcx())
book.add_item(epub.EpubNav())
book.spine = ["nav", one, two]
epub.write_epub(str(out / "canals.epub"), book)
