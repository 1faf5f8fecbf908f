// The results table: click a header to sort (again to reverse), type to filter rows.
// Numbers sort by their data-v value; empty values (failed results) always sort last.
(function () {
  var table = document.getElementById("results-table");
  if (!table) { return; }
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var filter = document.getElementById("filter"), count = document.getElementById("count");
  function value(row, i, numeric) {
    var cell = row.cells[i];
    if (!numeric) { return cell.textContent.toLowerCase(); }
    var v = cell.getAttribute("data-v");
    return v === "" || v === null ? null : parseFloat(v);
  }
  function sortBy(th, i) {
    var numeric = th.getAttribute("data-sort") === "num";
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = value(a, i, numeric), y = value(b, i, numeric);
      if (x === null || y === null) { return x === y ? 0 : x === null ? 1 : -1; }
      return x < y ? -dir : x > y ? dir : 0;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    th.addEventListener("click", function () { sortBy(th, i); });
  });
  function apply() {
    var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean), shown = 0;
    rows.forEach(function (row) {
      var text = row.cells[0].textContent + " " + row.cells[1].textContent + " " + row.cells[2].textContent;
      text = text.toLowerCase();
      var keep = words.every(function (w) { return text.indexOf(w) >= 0; });
      row.hidden = !keep;
      shown += keep ? 1 : 0;
    });
    count.textContent = shown + " of " + rows.length + " results";
  }
  filter.addEventListener("input", apply);
  apply();
  // A chart dot links to its row: a row the filter hides is shown again (the filter cleared).
  function reveal() {
    var row = location.hash.length > 1 && document.getElementById(location.hash.slice(1));
    if (row && row.hidden) { filter.value = ""; apply(); row.scrollIntoView(); }
  }
  window.addEventListener("hashchange", reveal);
})();
