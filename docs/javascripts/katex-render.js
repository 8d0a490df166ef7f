// Typesets the maths that pymdownx.arithmatex (generic mode) leaves in the page:
// <span class="arithmatex">\(...\)</span> inline, <div class="arithmatex">\[...\]</div> display.
// KaTeX itself (script, stylesheet, fonts) is copied into docs/assets/katex/ by `make docs`
// from the npm package, so the site needs no network. A formula KaTeX cannot parse is reported
// on the console, which `make docs-check` treats as a failure.
(function () {
  "use strict";

  function typeset(root) {
    if (typeof katex === "undefined") {
      console.error("KaTeX is not loaded: build the site with `make docs`, which copies it " +
                    "into docs/assets/katex/");
      return;
    }
    root.querySelectorAll(".arithmatex:not([data-typeset])").forEach(function (element) {
      var display = element.tagName === "DIV";
      var tex = element.textContent.trim()
        .replace(/^\\[(\[]/, "")
        .replace(/\\[)\]]$/, "");
      try {
        katex.render(tex, element, { displayMode: display, throwOnError: true });
        element.setAttribute("data-typeset", "katex");
      } catch (error) {
        element.textContent = tex;  // the reader sees the source rather than nothing
        console.error("KaTeX could not typeset " + JSON.stringify(tex) + ": " + error.message);
      }
    });
  }

  if (typeof document$ !== "undefined") {
    // Material for MkDocs: runs on the first load and after every instant navigation
    document$.subscribe(function () { typeset(document.body); });
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { typeset(document.body); });
  } else {
    typeset(document.body);
  }
})();
