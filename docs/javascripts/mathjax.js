// MathJax configuration for pymdownx.arithmatex (generic mode): typeset only the
// arithmatex elements, whose math arrives wrapped in \( \) or \[ \]. MathJax itself is
// served from this site (assets/mathjax/, copied by docs/hooks/mathjax.py), never a CDN.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
